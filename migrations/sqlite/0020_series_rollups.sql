-- Time series for charts (`GET /api/series`): daily rollups written only by the `series`
-- projection, so a year of a scope reads at most 366 rows per key instead of every call or
-- payment. One row per (metric, scope, scope id, dimension, key, UTC day); the dimension ''
-- with the key '' is the scope's total, so a total never sums its breakdown at read time.
--   metric: requests | tokens (counts, from `ApiCallMetered`);
--           revenue | fees (micro-USDT gross and platform fee, as `revenue_entries_view` counts
--           them); earnings (micro-USDT credited to a creator's or a node's payable)
--   scope:  platform (scope_id '') | model | service | node | consumer | creator
--   dim:    '' | model | service | subscription | type | kind
-- A month is the sum of its days; a close's distribution is dated to the first day of the month
-- it distributes (as my-earnings counts it), so months equal the existing routes' figures.
CREATE TABLE series_daily_view
(
    metric   text    NOT NULL,
    scope    text    NOT NULL,
    scope_id text    NOT NULL,
    dim      text    NOT NULL,
    dim_key  text    NOT NULL,
    day      text    NOT NULL, -- YYYY-MM-DD (UTC)
    value    integer NOT NULL,
    PRIMARY KEY (metric, scope, scope_id, dim, day, dim_key)
) STRICT;

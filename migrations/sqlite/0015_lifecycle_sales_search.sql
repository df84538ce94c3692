-- Issue 16 (backend): model sales and the marketplace's search over services AND published
-- models. Written only by the `marketplace` projection (models, sales, tags) and the `usage`
-- projection (daily usage); every value is copied from an event.

-- A model's sale price (NULL: not for sale), text and integer micro-USDT (for filters and sorts).
ALTER TABLE models_view ADD COLUMN sale_price text;
ALTER TABLE models_view ADD COLUMN sale_price_micros integer;
-- The marketplace lists published models (listed or in grace) newest first.
CREATE INDEX models_view_on_marketplace ON models_view (state, published_at);

-- Who bought which model (one row per buyer and model: the domain and a claim allow one).
CREATE TABLE model_purchases_view
(
    model_id     text NOT NULL,
    buyer        text NOT NULL,
    payment_id   text NOT NULL,
    price        text NOT NULL,
    purchased_at text NOT NULL,
    PRIMARY KEY (model_id, buyer)
) STRICT;
CREATE INDEX model_purchases_by_buyer ON model_purchases_view (buyer, purchased_at);

-- A model's tags, one row each (lower case), so a tag filter is an index lookup, not a scan of
-- the JSON column.
CREATE TABLE model_tags_view
(
    tag      text NOT NULL,
    model_id text NOT NULL,
    PRIMARY KEY (tag, model_id)
) STRICT;
CREATE INDEX model_tags_by_model ON model_tags_view (model_id);

-- Metered calls per model, service and UTC day: "popular" (requests in the last 30 days) and a
-- model's last-30-days figures read at most 30 rows per model instead of every call.
CREATE TABLE model_usage_daily_view
(
    model_id   text    NOT NULL,
    service_id text    NOT NULL, -- the service the call went through
    day        text    NOT NULL, -- YYYY-MM-DD (UTC)
    requests   integer NOT NULL,
    tokens     integer NOT NULL,
    PRIMARY KEY (model_id, day, service_id)
) STRICT;
CREATE INDEX model_usage_daily_by_service ON model_usage_daily_view (service_id, day);

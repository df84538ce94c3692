-- Revenue views, written only by the `revenue` projection. Money is integer micro-USDT.

-- One row per revenue fact as it confirms or accrues: each confirmed payment (gross, the
-- platform's fee and the net by its recorded fee schedule). `month` is the fact's month (UTC).
CREATE TABLE revenue_entries_view
(
    position      bigint NOT NULL,
    idx           bigint NOT NULL,
    month         text    NOT NULL,
    revenue_type  text    NOT NULL,
    source_id     text    NOT NULL,
    gross_micros  bigint NOT NULL,
    fee_micros    bigint NOT NULL,
    net_micros    bigint NOT NULL,
    model_id      text,
    at            text    NOT NULL,
    PRIMARY KEY (position, idx)
);
CREATE INDEX revenue_entries_by_month ON revenue_entries_view (month, revenue_type);

-- Each month's close (`MonthClosed`): totals and digests; the whole record is in `record`.
CREATE TABLE revenue_closes_view
(
    month                  text    NOT NULL PRIMARY KEY,
    through_tx             bigint NOT NULL,
    through_position       bigint NOT NULL,
    pool_total_micros      bigint NOT NULL,
    pool_distributed_micros bigint NOT NULL,
    group_api_micros       bigint NOT NULL,
    tokens_total           bigint NOT NULL,
    usage_events           bigint NOT NULL,
    payments               bigint NOT NULL,
    corrections            bigint NOT NULL,
    input_digest           text    NOT NULL,
    digest                 text    NOT NULL,
    closed_by              text    NOT NULL,
    closed_at              text    NOT NULL,
    record                 text    NOT NULL
);

-- Each model's line in a closed month.
CREATE TABLE revenue_model_lines_view
(
    month            text    NOT NULL,
    model_id         text    NOT NULL,
    owner_kind       text,
    owner_id         text,
    tokens           bigint NOT NULL,
    requests         bigint NOT NULL,
    usage_percent    text    NOT NULL,
    pool_micros      bigint NOT NULL,
    group_api_micros bigint NOT NULL,
    PRIMARY KEY (month, model_id)
);
CREATE INDEX revenue_model_lines_by_model ON revenue_model_lines_view (model_id, month);

-- What each user received from each model in a closed month (pool share or group API revenue).
CREATE TABLE revenue_payouts_view
(
    month         text    NOT NULL,
    idx           bigint NOT NULL,
    user_id       text    NOT NULL,
    model_id      text    NOT NULL,
    source        text    NOT NULL,
    amount_micros bigint NOT NULL,
    split_version bigint,
    PRIMARY KEY (month, idx)
);
CREATE INDEX revenue_payouts_by_user ON revenue_payouts_view (user_id, month);
CREATE INDEX revenue_payouts_by_model ON revenue_payouts_view (model_id, month);

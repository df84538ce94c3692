-- The marketplace's read models, written only by the `marketplace` projection from model,
-- api_service and api_subscription events. JSON columns hold values copied whole from events
-- (pricing, limits, tags, source); money is integer micro-USDT next to its canonical text.
CREATE TABLE models_view
(
    model_id     text    NOT NULL PRIMARY KEY,
    owner_kind   text    NOT NULL, -- user | group
    owner_id     text    NOT NULL,
    uploaded_by  text    NOT NULL,
    name         text    NOT NULL,
    description  text    NOT NULL,
    tags         text    NOT NULL, -- JSON array
    sha256       text    NOT NULL,
    cid          text    NOT NULL,
    size_bytes   bigint  NOT NULL,
    backend      text    NOT NULL,
    source       text    NOT NULL, -- JSON
    state        text    NOT NULL, -- uploaded | listed | grace | delisted | deleted
    publish_fee  text,             -- first_free | the payment id
    published_at text,
    listed_until text,
    grace_until  text,
    uploaded_at  text    NOT NULL,
    updated_at   text    NOT NULL
);
CREATE INDEX models_view_by_owner ON models_view (owner_kind, owner_id, uploaded_at);
-- The listing scheduler looks for listings and grace periods that have ended.
CREATE INDEX models_view_listing_due ON models_view (state, listed_until);
CREATE INDEX models_view_grace_due ON models_view (state, grace_until);
CREATE INDEX models_view_by_sha256 ON models_view (sha256);

CREATE TABLE services_view
(
    service_id        text    NOT NULL PRIMARY KEY,
    owner             text    NOT NULL,
    model_id          text    NOT NULL,
    model_name        text    NOT NULL,
    model_state       text    NOT NULL,
    name              text    NOT NULL,
    description       text    NOT NULL,
    pricing           text    NOT NULL, -- JSON, as in the event
    pricing_kind      text    NOT NULL,
    sort_price_micros bigint  NOT NULL,
    pricing_version   integer NOT NULL,
    rate_limits       text    NOT NULL, -- JSON
    active            integer NOT NULL, -- 0 | 1
    subscribers       integer NOT NULL, -- active subscriptions
    created_at        text    NOT NULL,
    updated_at        text    NOT NULL
);
CREATE INDEX services_view_by_owner ON services_view (owner, created_at);
CREATE INDEX services_view_by_model ON services_view (model_id);
CREATE INDEX services_view_public ON services_view (active, model_state, created_at);

CREATE TABLE api_subscriptions_view
(
    subscription_id text    NOT NULL PRIMARY KEY,
    consumer        text    NOT NULL,
    service_id      text    NOT NULL,
    model_id        text    NOT NULL,
    status          text    NOT NULL, -- pending_payment | active | cancelled
    pricing         text    NOT NULL, -- JSON: the pricing subscribed at
    pricing_version integer NOT NULL,
    amount_due      text    NOT NULL,
    credit_micros   bigint  NOT NULL,
    payment_id      text,
    key_hint        text    NOT NULL,
    period_end      text,
    requested_at    text    NOT NULL,
    activated_at    text,
    cancelled_at    text
);
CREATE INDEX api_subscriptions_by_consumer ON api_subscriptions_view (consumer, requested_at);
CREATE INDEX api_subscriptions_by_service ON api_subscriptions_view (service_id, status);
CREATE INDEX api_subscriptions_by_model ON api_subscriptions_view (model_id, status);

-- Key lookup on the hot path of every API call: SHA-256 of the key -> what it may call.
-- Only live keys have a row; a regenerated or cancelled key's row is deleted.
CREATE TABLE api_keys_view
(
    key_sha256      text NOT NULL PRIMARY KEY,
    subscription_id text NOT NULL,
    consumer        text NOT NULL,
    service_id      text NOT NULL,
    model_id        text NOT NULL,
    status          text NOT NULL -- pending_payment | active
);
CREATE INDEX api_keys_by_subscription ON api_keys_view (subscription_id);

-- Metered calls of the OpenAI-compatible API, one row per `ApiCallMetered` event, written only by
-- the `usage` projection. Money is integer micro-USDT next to its canonical text.
CREATE TABLE api_calls_view
(
    request_id        text    NOT NULL PRIMARY KEY,
    subscription_id   text    NOT NULL,
    consumer          text    NOT NULL,
    service_id        text    NOT NULL,
    model_id          text    NOT NULL,
    node_id           text    NOT NULL,
    prompt_tokens     bigint  NOT NULL,
    completion_tokens bigint  NOT NULL,
    usage_exact       bigint  NOT NULL,
    cost              text    NOT NULL,
    cost_micros       bigint  NOT NULL,
    streamed          bigint  NOT NULL,
    latency_ms        bigint  NOT NULL,
    outcome           text    NOT NULL,
    at                text    NOT NULL
);
CREATE INDEX api_calls_view_by_subscription ON api_calls_view (subscription_id, at);
CREATE INDEX api_calls_view_by_model ON api_calls_view (model_id, at);

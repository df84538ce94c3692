//! The OpenAPI 3.1 document of the HTTP API, generated from the code by `utoipa`: each handler
//! carries its `#[utoipa::path]` (path, method, parameters, body, answers), request bodies
//! derive `ToSchema` where they are parsed, domain types where they are defined, and the
//! answers built with `json!` are described in `schemas`. Served at `GET /api/openapi.json`,
//! browsable at `GET /api/docs` (`docs`), printed by `aiforge openapi`; the web app's API
//! client types are generated from it.
//!
//! What every operation shares is added here once, from the document itself (`CommonAnswers`):
//! the error shape as the `default` answer (OpenAI's on `/api/v1`), 401 on every operation that
//! needs a credential, 403 on admin operations, and 400/413/422 on every JSON command body.
//!
//! `tests/openapi.rs` fails when a route of the router is missing here or the other way round.

pub mod docs;
pub mod schemas;

use std::collections::BTreeSet;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde_json::Value;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AIForge Network API",
        description = "The platform API (accounts, wallets, groups, payments, models, marketplace, revenue, compute) and the OpenAI-compatible API under `/api/v1`. Money is always a decimal string (`Usdt`), never a JSON number. Commands accept an `Idempotency-Key` header: a retried request with the same key answers the first result.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        crate::routes::accounts::register,
        crate::routes::accounts::login,
        crate::routes::accounts::logout,
        crate::routes::accounts::me,
        crate::routes::wallets::auth_message,
        crate::routes::wallets::login,
        crate::routes::wallets::connect,
        crate::routes::wallets::verify,
        crate::routes::wallets::mine,
        crate::routes::wallets::choose_payout,
        crate::routes::admin::wallets,
        crate::routes::admin::add_wallet,
        crate::routes::admin::remove_wallet,
        crate::routes::admin::users,
        crate::routes::admin::stats,
        crate::routes::admin::payments,
        crate::routes::admin::user,
        crate::routes::admin::deactivate_user,
        crate::routes::admin::reactivate_user,
        crate::routes::groups::create,
        crate::routes::groups::mine,
        crate::routes::groups::get,
        crate::routes::groups::add_member,
        crate::routes::groups::change_role,
        crate::routes::groups::remove_member,
        crate::routes::groups::leave,
        crate::routes::groups::transfer,
        crate::routes::payments::create,
        crate::routes::payments::verify,
        crate::routes::payments::history,
        crate::routes::payments::get,
        crate::routes::payments::networks,
        crate::routes::payments::plans,
        crate::routes::payments::subscribe,
        crate::routes::payments::mine,
        crate::routes::payments::cancel,
        crate::routes::payments::ledger,
        crate::routes::payments::ledger_account,
        crate::routes::models::upload,
        crate::routes::models::import,
        crate::routes::models::mine,
        crate::routes::models::get,
        crate::routes::models::placement,
        crate::routes::models::edit,
        crate::routes::models::delete,
        crate::routes::models::download,
        crate::routes::models::publishing,
        crate::routes::models::publish,
        crate::routes::models::listing_fee,
        crate::routes::models::set_sale,
        crate::routes::models::buy,
        crate::routes::marketplace::create,
        crate::routes::marketplace::browse,
        crate::routes::marketplace::search,
        crate::routes::marketplace::model_detail,
        crate::routes::marketplace::mine,
        crate::routes::marketplace::my_subscriptions,
        crate::routes::marketplace::regenerate_key,
        crate::routes::marketplace::usage,
        crate::routes::marketplace::cancel,
        crate::routes::marketplace::renew,
        crate::routes::marketplace::top_up,
        crate::routes::marketplace::get,
        crate::routes::marketplace::update,
        crate::routes::marketplace::subscribe,
        crate::routes::group_revenue::get,
        crate::routes::group_revenue::set,
        crate::routes::revenue::group_model_distribution,
        crate::routes::revenue::group_model_distribute,
        crate::routes::revenue::my_group_earnings,
        crate::routes::revenue::summary,
        crate::routes::revenue::monthly,
        crate::routes::revenue::distribution,
        crate::routes::revenue::model,
        crate::routes::revenue::close,
        crate::routes::revenue::my_earnings,
        crate::routes::chat::models,
        crate::routes::chat::plan_usage,
        crate::routes::chat::api_key,
        crate::routes::chat::issue_api_key,
        crate::routes::chat::get_receipt,
        crate::routes::conversations::list,
        crate::routes::conversations::create,
        crate::routes::conversations::get,
        crate::routes::conversations::patch,
        crate::routes::conversations::delete,
        crate::routes::conversations::export,
        crate::routes::conversations::post_message,
        crate::routes::openai::list_models,
        crate::routes::openai::get_model,
        crate::routes::openai::service_models,
        crate::routes::openai::service_model,
        crate::gateway::chat::completions,
        crate::gateway::chat::service_completions,
        crate::gateway::completions::completions,
        crate::gateway::completions::service_completions,
        crate::routes::compute::register,
        crate::routes::compute::my_nodes,
        crate::routes::compute::get_node,
        crate::routes::compute::node_heartbeats,
        crate::routes::compute::heartbeat,
        crate::routes::compute::offline,
        crate::routes::compute::next_job,
        crate::routes::compute::started,
        crate::routes::compute::finished,
        crate::routes::compute::failed,
        crate::routes::compute::node_logs,
        crate::routes::compute::admin_nodes,
        crate::routes::inference_nodes::inference_nodes,
        crate::routes::inference_nodes::placements,
        crate::routes::compute::admin_node_jobs,
        crate::routes::compute::activate,
        crate::routes::compute::deactivate,
        crate::routes::compute::submit,
        crate::routes::compute::my_jobs,
        crate::routes::compute::get_job,
        crate::routes::compute::cancel,
        crate::routes::compute::job_logs,
        crate::routes::blobs::upload,
        crate::routes::blobs::download,
        crate::routes::blobs::node_input,
        crate::routes::blobs::node_model,
        crate::routes::blobs::node_output,
        crate::routes::blobs::job_output,
        crate::routes::payouts::mine,
        crate::routes::payouts::withdraw,
        crate::routes::payouts::all,
        crate::routes::payouts::approve,
        crate::routes::payouts::cancel,
        crate::routes::payouts::hot_wallet,
        crate::routes::payouts::run,
        crate::routes::payouts::receipt,
        crate::routes::payouts::proof,
        crate::routes::fees::book,
        crate::routes::fees::current,
        crate::routes::fees::propose,
        crate::routes::fees::adopt,
        crate::routes::fees::withdraw,
        crate::routes::fees::what_if,
        crate::routes::series::series,
        crate::routes::audit::verify,
        crate::routes::audit::replay,
        crate::routes::ops::advance_clock,
        crate::routes::ops::healthz,
        crate::routes::ops::readyz,
        crate::routes::ops::metrics,
        document_json,
        docs::page,
        docs::script,
        docs::style,
    ),
    components(schemas(schemas::ApiErrorBody, schemas::OpenAiErrorBody)),
    modifiers(&SecuritySchemes, &CommonAnswers, &AnswersCarryTheirNulls),
    tags(
        (name = "accounts", description = "Email accounts and sessions"),
        (name = "wallets", description = "Wallet sign-in and an account's wallets"),
        (name = "admin", description = "The admin whitelist, users and platform counts (a session signed in with a whitelisted wallet)"),
        (name = "groups", description = "Groups and their members"),
        (name = "payments", description = "USDT payments verified on chain, and the ledger"),
        (name = "subscriptions", description = "Platform subscription plans"),
        (name = "models", description = "Model files: upload, import, download, metadata"),
        (name = "publishing", description = "Putting a model on the marketplace, and its fees"),
        (name = "marketplace", description = "API services and their subscriptions (API keys)"),
        (name = "revenue", description = "Revenue views, the monthly close and earnings"),
        (name = "payouts", description = "Money out: payouts of payables to payees' wallets, approvals, the hot wallet"),
        (name = "group-revenue", description = "Group models' revenue splits and distributions"),
        (name = "openai", description = "The OpenAI-compatible API (API key); errors in OpenAI's shape"),
        (name = "chat", description = "The web chat: models by entitlement, plan usage, the platform API key, conversations and their streamed answers, receipts"),
        (name = "nodes", description = "Compute nodes: registration by their owner; heartbeats, work and reports by the node (node token)"),
        (name = "jobs", description = "Compute jobs and their files"),
        (name = "fees", description = "The fee schedule as data: versions, proposals, adoption and the what-if replay of a closed month"),
        (name = "series", description = "Time series for charts: requests, tokens, revenue, fees and earnings by day or month"),
        (name = "ops", description = "Health, readiness, metrics and the test clock"),
        (name = "docs", description = "This document and its browsable page"),
    ),
)]
pub struct ApiDoc;

/// The `Idempotency-Key` header of a command: a retried request with the same key (and the
/// same body) answers the first result; the same key with another body is 409.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// 1-255 visible ASCII characters, chosen by the client (a UUID is a good choice).
    #[param(rename = "Idempotency-Key", nullable = false)]
    pub idempotency_key: Option<String>,
}

/// The document, built from the code.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as pretty JSON, made once.
static DOCUMENT_JSON: LazyLock<Result<String, String>> =
    LazyLock::new(|| document().to_pretty_json().map_err(|e| e.to_string()));

/// The document as pretty JSON (what `GET /api/openapi.json` and `aiforge openapi` give).
pub fn document_text() -> Result<&'static str, String> {
    DOCUMENT_JSON.as_deref().map_err(Clone::clone)
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "docs",
    operation_id = "openapi_document",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = serde_json::Value)),
)]
pub async fn document_json() -> Result<impl IntoResponse, ApiError> {
    let text = document_text().map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], text))
}

/// Bearer credentials: a session (JWT), an admin session, a node token, an API key.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: &str, description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "session",
            bearer(
                "JWT",
                "A session token from /api/auth/login or /api/auth/wallet/login.",
            ),
        );
        components.add_security_scheme(
            "admin_session",
            bearer(
                "JWT",
                "A session token from /api/auth/wallet/login, signed in with a wallet that is on the admin whitelist now.",
            ),
        );
        components.add_security_scheme(
            "node_token",
            bearer(
                "node token",
                "A node's token, shown once by POST /api/nodes/register.",
            ),
        );
        components.add_security_scheme(
            "api_key",
            bearer(
                "aiforge_…",
                "An API key, shown once by POST /api/marketplace/{service_id}/subscribe.",
            ),
        );
    }
}

/// What every operation shares, added from the document itself where the operation does not
/// say it already: see the module's doc.
struct CommonAnswers;

/// Reusable answers in `components.responses`: (name, description, error schema).
const COMMON_ANSWERS: [(&str, &str, &str); 7] = [
    (
        "Error",
        "An error in the platform's shape; 5xx bodies are generic (`internal`, `unavailable` with Retry-After)",
        "ApiErrorBody",
    ),
    (
        "Unauthorized",
        "No credential, or one that does not verify (`unauthorized`)",
        "ApiErrorBody",
    ),
    (
        "AdminForbidden",
        "The session was not signed in with a whitelisted wallet (`forbidden`)",
        "ApiErrorBody",
    ),
    (
        "MalformedBody",
        "The body is not JSON (`malformed_json`), could not be read (`unreadable_body`), or the Idempotency-Key header is invalid (`invalid_idempotency_key`)",
        "ApiErrorBody",
    ),
    (
        "BodyTooLarge",
        "The body is larger than the server takes (`body_too_large`)",
        "ApiErrorBody",
    ),
    (
        "InvalidBody",
        "The body has the wrong shape (`invalid_body`) or a field is invalid (`invalid_field`, naming `field`)",
        "ApiErrorBody",
    ),
    (
        "OpenAiError",
        "An error in OpenAI's shape, `{\"error\":{\"message\",\"type\",\"param\",\"code\"}}`",
        "OpenAiErrorBody",
    ),
];

fn answer_ref(name: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::Ref(Ref::from_response_name(name))
}

fn add_if_absent(operation: &mut Operation, status: &str, answer: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| answer_ref(answer));
}

/// The names of the security schemes an operation accepts.
fn schemes_of(operation: &Operation) -> Vec<String> {
    let Some(requirements) = &operation.security else {
        return Vec::new();
    };
    requirements
        .iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .filter_map(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
        .flatten()
        .collect()
}

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description, schema) in COMMON_ANSWERS {
            let answer = ResponseBuilder::new().description(description).content(
                "application/json",
                Content::new(Some(Ref::from_schema_name(schema))),
            );
            components
                .responses
                .insert(name.to_string(), RefOr::T(answer.build()));
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            let openai = path.starts_with("/api/v1/");
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let schemes = schemes_of(operation);
                if openai {
                    add_if_absent(operation, "default", "OpenAiError");
                    if !schemes.is_empty() {
                        add_if_absent(operation, "401", "OpenAiError");
                    }
                    continue;
                }
                add_if_absent(operation, "default", "Error");
                if !schemes.is_empty() {
                    add_if_absent(operation, "401", "Unauthorized");
                }
                if schemes.iter().any(|s| s == "admin_session") {
                    add_if_absent(operation, "403", "AdminForbidden");
                }
                let json_body = operation
                    .request_body
                    .as_ref()
                    .is_some_and(|body| body.content.contains_key("application/json"));
                if json_body {
                    add_if_absent(operation, "400", "MalformedBody");
                    add_if_absent(operation, "413", "BodyTooLarge");
                    add_if_absent(operation, "422", "InvalidBody");
                }
            }
        }
    }
}

/// An answer always carries its nullable fields (`null` when empty), while a request may leave
/// an `Option` out; utoipa makes every `Option` field optional. For the schemas that only answers
/// use, a nullable field is made required, so generated clients type it `T | null`, not
/// `T | null | undefined`. Fields an answer really leaves out are not nullable in the schema
/// (`#[schema(nullable = false)]`) and stay optional.
struct AnswersCarryTheirNulls;

/// The component schemas `value` refers to, directly or through other schemas.
fn reachable_schemas(value: &Value, schemas: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if let ("$ref", Value::String(r)) = (key.as_str(), v) {
                    if let Some(name) = r.strip_prefix("#/components/schemas/") {
                        if out.insert(name.to_string()) {
                            reachable_schemas(&schemas[name], schemas, out);
                        }
                    }
                } else {
                    reachable_schemas(v, schemas, out);
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| reachable_schemas(v, schemas, out)),
        _ => {}
    }
}

fn is_nullable(property: &Value) -> bool {
    let null_type = |schema: &Value| match &schema["type"] {
        Value::String(t) => t == "null",
        Value::Array(types) => types.iter().any(|t| t == "null"),
        _ => false,
    };
    null_type(property)
        || ["oneOf", "anyOf"]
            .iter()
            .filter_map(|k| property[*k].as_array())
            .any(|items| items.iter().any(null_type))
}

fn require_nullable(schema: &mut Schema, wanted: &Value) {
    match schema {
        Schema::Object(object) => {
            let props = wanted["properties"].as_object();
            for (name, property) in props.into_iter().flatten() {
                if is_nullable(property) && !object.required.contains(name) {
                    object.required.push(name.clone());
                }
            }
        }
        Schema::AllOf(all) => {
            let parts = wanted["allOf"].as_array();
            for (item, part) in all.items.iter_mut().zip(parts.into_iter().flatten()) {
                if let RefOr::T(inner) = item {
                    require_nullable(inner, part);
                }
            }
        }
        _ => {}
    }
}

impl Modify for AnswersCarryTheirNulls {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Ok(doc) = serde_json::to_value(&*openapi) else {
            return;
        };
        let schemas = &doc["components"]["schemas"];
        let (mut answers, mut requests) = (BTreeSet::new(), BTreeSet::new());
        reachable_schemas(&doc["components"]["responses"], schemas, &mut answers);
        for item in doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, i)| i)
        {
            for operation in item.as_object().into_iter().flatten().map(|(_, o)| o) {
                reachable_schemas(&operation["responses"], schemas, &mut answers);
                reachable_schemas(&operation["requestBody"], schemas, &mut requests);
                reachable_schemas(&operation["parameters"], schemas, &mut requests);
            }
        }
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for name in answers.difference(&requests) {
            if let Some(RefOr::T(schema)) = components.schemas.get_mut(name) {
                require_nullable(schema, &schemas[name.as_str()]);
            }
        }
    }
}

//! The HTTP face of AIForge and the `aiforge` binary's commands. Routes are thin (see
//! `routes/`); errors take one shape (`error`); settings come from `settings`. Business rules
//! are not here: they are in `aiforge_domain`, run by `aiforge_commands`, read back through
//! `aiforge_projections`.

pub mod answers;
pub mod auth;
pub mod cli;
pub mod error;
pub mod extract;
pub mod gateway;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod session;
pub mod settings;
pub mod web;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aiforge_commands::accounts::Accounts;
use aiforge_commands::blob::import::{HfImporter, HfSettings};
use aiforge_commands::blob::{BlobStore, LocalBlobStore};
use aiforge_commands::bus::{self, EventBus};
use aiforge_commands::chain::ethereum::{EthereumConfig, EthereumVerifier};
use aiforge_commands::chain::tron::{TronConfig, TronVerifier};
use aiforge_commands::groups::Groups;
use aiforge_commands::marketplace::Marketplace;
use aiforge_commands::payments::{PaymentNetwork, Payments};
use aiforge_commands::reactor::ApiSubscriptionActivation;
use aiforge_commands::reactor::SubscriptionActivation;
use aiforge_commands::wallet_auth::{SignInMessages, WalletAuth};
use aiforge_commands::Executor;
use aiforge_commands::{Clock, Database, ManualClock, SystemClock};
use aiforge_domain::admin::{AdminCommand, AdminServices, AdminWhitelist, ADMIN_WHITELIST_ID};
use aiforge_domain::wallet::{Network, Wallet};
use aiforge_projections::Projector;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Router;
use secrecy::ExposeSecret;
use tokio::sync::watch;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::JwtKeys;
use crate::error::ApiError;
use crate::settings::Settings;

/// A request that takes longer than this is answered 408 and its work dropped.
pub const REQUEST_TIMEOUT_SECS: u64 = 30;

/// How long a start waits for the read models to include the log as it found it before it
/// serves (a restart after a crash: the first read sees what the last process wrote).
pub const STARTUP_CATCH_UP_SECS: u64 = 60;
/// On SIGTERM, background readers get this long to finish the batch in hand.
pub const SHUTDOWN_GRACE_SECS: u64 = 10;
/// How often the scheduler lease's holder deletes expired admission holds.
pub const HOLD_SWEEP_SECS: u64 = 60;
/// How often the lease holder looks for a month whose scheduled close is due.
pub const CLOSE_PASS_SECS: u64 = 60;

/// Everything a handler reaches, behind one `Arc`: axum clones the state for every extractor of
/// every request, and a clone is then one reference count, not thirty.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

pub struct AppParts {
    pub db: Database,
    pub accounts: Arc<Accounts>,
    pub wallets: Arc<WalletAuth>,
    pub admins: Arc<Executor<AdminWhitelist>>,
    pub groups: Arc<Groups>,
    pub payments: Arc<Payments>,
    /// What the page needs to pay from a browser wallet (`GET /api/payments/networks`).
    pub payment_chains: Arc<[routes::payments::PaymentChain]>,
    pub projector: Projector,
    pub jwt: Arc<JwtKeys>,
    pub clock: Arc<dyn Clock>,
    pub bus: EventBus,
    pub marketplace: Arc<Marketplace>,
    pub blobs: Arc<dyn BlobStore>,
    pub model_bytes_max: u64,
    /// The largest job input or single job output (`AIFORGE_JOB_BLOB_BYTES_MAX`).
    pub job_blob_bytes_max: u64,
    /// `AIFORGE_SERVING_MEMORY_BYTES`: the largest memory a model may need to be servable here.
    pub serving_memory_bytes: u64,
    pub hf: Arc<HfImporter>,
    /// Set only when the server runs on a manual clock (`AIFORGE_MANUAL_CLOCK_START`).
    pub manual_clock: Option<Arc<ManualClock>>,
    pub gateway: Arc<gateway::Gateway>,
    pub revenue_book: Arc<Executor<aiforge_domain::revenue_book::RevenueBook>>,
    pub compute: Arc<aiforge_commands::passes::compute::ComputeNetwork>,
    /// What the cluster's passes read (the read models, settled).
    pub views: Arc<dyn aiforge_commands::passes::Views>,
    /// Held by the one instance that runs the cluster's periodic tasks.
    pub scheduler_lease: Arc<aiforge_commands::lease::Lease>,
    /// The scheduled close's settling delay; None when every close is left to an admin
    /// (`AIFORGE_CLOSE_AUTOMATIC=false`).
    pub close_settle: Option<time::Duration>,
    /// Money out: the payout pass, withdraws, approvals.
    pub payouts: Arc<aiforge_commands::payouts::Payouts>,
    /// The browser session cookie and its CSRF rule (`session.rs`).
    pub session: Arc<session::SessionCookies>,
    /// Users' platform API keys.
    pub platform_keys: Arc<aiforge_commands::platform_keys::PlatformKeys>,
    /// The web chat's conversations (plain tables, not events).
    pub conversations: Arc<aiforge_commands::conversations::Conversations>,
    /// The fee book: versions of the fee schedule, read from the store (`routes::fees`).
    pub fees: Arc<aiforge_commands::fees::Fees>,
}

pub fn router(state: AppState, body_bytes_max: usize) -> Router {
    let api = Router::new()
        .route("/api/auth/register", post(routes::accounts::register))
        .route("/api/auth/login", post(routes::accounts::login))
        .route("/api/auth/me", get(routes::accounts::me))
        .route("/api/auth/logout", post(routes::accounts::logout))
        .route(
            "/api/auth/wallet/auth-message",
            get(routes::wallets::auth_message),
        )
        .route("/api/auth/wallet/login", post(routes::wallets::login))
        .route("/api/wallets/connect", post(routes::wallets::connect))
        .route("/api/wallets/verify", post(routes::wallets::verify))
        .route("/api/wallets/my-wallets", get(routes::wallets::mine))
        .route("/api/wallets/payout", post(routes::wallets::choose_payout))
        .route("/api/payouts/mine", get(routes::payouts::mine))
        .route("/api/payouts/withdraw", post(routes::payouts::withdraw))
        .route(
            "/api/payouts/receipts/{year}/{month}",
            get(routes::payouts::receipt),
        )
        .route(
            "/api/payouts/{payout_id}/proof",
            get(routes::payouts::proof),
        )
        .route("/api/admin/payouts", get(routes::payouts::all))
        .route(
            "/api/admin/payouts/{payout_id}/approve",
            post(routes::payouts::approve),
        )
        .route(
            "/api/admin/payouts/{payout_id}/cancel",
            post(routes::payouts::cancel),
        )
        .route(
            "/api/admin/payouts/hot-wallet",
            get(routes::payouts::hot_wallet),
        )
        .route("/api/admin/payouts/run", post(routes::payouts::run))
        .route("/api/admin/audit/verify", post(routes::audit::verify))
        .route(
            "/api/admin/audit/replay/{year}/{month}",
            post(routes::audit::replay),
        )
        .route("/api/admin/wallets", get(routes::admin::wallets))
        .route("/api/admin/wallets/add", post(routes::admin::add_wallet))
        .route(
            "/api/admin/wallets/remove",
            post(routes::admin::remove_wallet),
        )
        .route("/api/admin/users", get(routes::admin::users))
        .route("/api/admin/stats", get(routes::admin::stats))
        .route("/api/admin/payments", get(routes::admin::payments))
        .route("/api/admin/users/{user_id}", get(routes::admin::user))
        .route(
            "/api/admin/users/{user_id}/deactivate",
            post(routes::admin::deactivate_user),
        )
        .route(
            "/api/admin/users/{user_id}/reactivate",
            post(routes::admin::reactivate_user),
        )
        .route("/api/groups", post(routes::groups::create))
        .route("/api/groups/my-groups", get(routes::groups::mine))
        .route("/api/groups/{group_id}", get(routes::groups::get))
        .route(
            "/api/groups/{group_id}/members",
            post(routes::groups::add_member),
        )
        .route(
            "/api/groups/{group_id}/members/{user_id}",
            axum::routing::put(routes::groups::change_role).delete(routes::groups::remove_member),
        )
        .route("/api/groups/{group_id}/leave", post(routes::groups::leave))
        .route(
            "/api/groups/{group_id}/transfer-ownership",
            post(routes::groups::transfer),
        )
        .route("/api/payments/create", post(routes::payments::create))
        .route("/api/payments/verify", post(routes::payments::verify))
        .route("/api/payments/networks", get(routes::payments::networks))
        .route("/api/payments/history/all", get(routes::payments::history))
        .route("/api/payments/{payment_id}", get(routes::payments::get))
        .route("/api/subscriptions/plans", get(routes::payments::plans))
        .route(
            "/api/subscriptions/create",
            post(routes::payments::subscribe),
        )
        .route(
            "/api/subscriptions/my-subscription",
            get(routes::payments::mine),
        )
        .route("/api/subscriptions/cancel", post(routes::payments::cancel))
        .route("/api/admin/ledger", get(routes::payments::ledger))
        .route(
            "/api/admin/ledger/{account}",
            get(routes::payments::ledger_account),
        )
        .route("/api/models/my-models", get(routes::models::mine))
        .route("/api/models/{model_id}/sale", put(routes::models::set_sale))
        .route("/api/models/{model_id}/buy", post(routes::models::buy))
        .route(
            "/api/models/{model_id}",
            get(routes::models::get)
                .put(routes::models::edit)
                .delete(routes::models::delete),
        )
        .route(
            "/api/models/{model_id}/placement",
            get(routes::models::placement),
        )
        .route(
            "/api/publishing/model/{model_id}/publishing",
            get(routes::models::publishing),
        )
        .route(
            "/api/publishing/model/{model_id}/publish",
            post(routes::models::publish),
        )
        .route(
            "/api/publishing/model/{model_id}/listing-fee",
            post(routes::models::listing_fee),
        )
        .route("/api/marketplace/create", post(routes::marketplace::create))
        .route(
            "/api/marketplace/marketplace",
            get(routes::marketplace::browse),
        )
        .route("/api/marketplace/search", get(routes::marketplace::search))
        .route(
            "/api/marketplace/models/{model_id}",
            get(routes::marketplace::model_detail),
        )
        .route(
            "/api/marketplace/my-services",
            get(routes::marketplace::mine),
        )
        .route(
            "/api/marketplace/my-subscriptions",
            get(routes::marketplace::my_subscriptions),
        )
        .route(
            "/api/marketplace/subscriptions/{subscription_id}/regenerate-key",
            post(routes::marketplace::regenerate_key),
        )
        .route(
            "/api/marketplace/subscriptions/{subscription_id}/usage",
            get(routes::marketplace::usage),
        )
        .route(
            "/api/marketplace/subscriptions/{subscription_id}/cancel",
            post(routes::marketplace::cancel),
        )
        .route(
            "/api/marketplace/subscriptions/{subscription_id}/renew",
            post(routes::marketplace::renew),
        )
        .route(
            "/api/marketplace/subscriptions/{subscription_id}/top-up",
            post(routes::marketplace::top_up),
        )
        .route(
            "/api/marketplace/{service_id}",
            get(routes::marketplace::get).put(routes::marketplace::update),
        )
        .route(
            "/api/marketplace/{service_id}/subscribe",
            post(routes::marketplace::subscribe),
        )
        .route(
            "/api/group-revenue/model/{model_id}/split",
            get(routes::group_revenue::get).post(routes::group_revenue::set),
        )
        .route(
            "/api/group-revenue/model/{model_id}/distribution/{year}/{month}",
            get(routes::revenue::group_model_distribution),
        )
        .route(
            "/api/group-revenue/model/{model_id}/distribute/{year}/{month}",
            post(routes::revenue::group_model_distribute),
        )
        .route(
            "/api/group-revenue/my-group-earnings",
            get(routes::revenue::my_group_earnings),
        )
        .route("/api/revenue/summary", get(routes::revenue::summary))
        .route(
            "/api/revenue/monthly/{year}/{month}",
            get(routes::revenue::monthly),
        )
        .route(
            "/api/revenue/distribution/{year}/{month}",
            get(routes::revenue::distribution),
        )
        .route(
            "/api/revenue/model/{model_id}/{year}/{month}",
            get(routes::revenue::model),
        )
        .route(
            "/api/revenue/close/{year}/{month}",
            post(routes::revenue::close),
        )
        .route(
            "/api/revenue/my-earnings",
            get(routes::revenue::my_earnings),
        )
        .route("/api/series", get(routes::series::series))
        .route("/api/chat/models", get(routes::chat::models))
        .route("/api/plan/usage", get(routes::chat::plan_usage))
        .route(
            "/api/account/api-key",
            get(routes::chat::api_key).post(routes::chat::issue_api_key),
        )
        .route("/api/receipts/{request_id}", get(routes::chat::get_receipt))
        .route(
            "/api/conversations",
            get(routes::conversations::list).post(routes::conversations::create),
        )
        .route(
            "/api/conversations/{conversation_id}",
            get(routes::conversations::get)
                .patch(routes::conversations::patch)
                .delete(routes::conversations::delete),
        )
        .route(
            "/api/conversations/{conversation_id}/export",
            get(routes::conversations::export),
        )
        .route("/api/v1/models", get(routes::openai::list_models))
        .route("/api/v1/models/{model_id}", get(routes::openai::get_model))
        .route(
            "/api/v1/services/{service_id}/models",
            get(routes::openai::service_models),
        )
        .route(
            "/api/v1/services/{service_id}/models/{model_id}",
            get(routes::openai::service_model),
        )
        .route("/api/ops/clock/advance", post(routes::ops::advance_clock))
        .route("/api/admin/fees", get(routes::fees::book))
        .route("/api/fees/current", get(routes::fees::current))
        .route("/api/admin/fees/proposals", post(routes::fees::propose))
        .route(
            "/api/admin/fees/proposals/{id}/adopt",
            post(routes::fees::adopt),
        )
        .route(
            "/api/admin/fees/proposals/{id}/withdraw",
            post(routes::fees::withdraw),
        )
        .route("/api/admin/fees/what-if", post(routes::fees::what_if))
        .route("/api/nodes/register", post(routes::compute::register))
        .route("/api/nodes/my-nodes", get(routes::compute::my_nodes))
        .route("/api/nodes/{node_id}", get(routes::compute::get_node))
        .route(
            "/api/nodes/{node_id}/heartbeat",
            post(routes::compute::heartbeat),
        )
        .route(
            "/api/nodes/{node_id}/heartbeats",
            get(routes::compute::node_heartbeats),
        )
        .route(
            "/api/nodes/{node_id}/offline",
            post(routes::compute::offline),
        )
        .route(
            "/api/nodes/{node_id}/jobs/next",
            get(routes::compute::next_job),
        )
        .route(
            "/api/nodes/{node_id}/jobs/{job_id}/started",
            post(routes::compute::started),
        )
        .route(
            "/api/nodes/{node_id}/jobs/{job_id}/finished",
            post(routes::compute::finished),
        )
        .route(
            "/api/nodes/{node_id}/jobs/{job_id}/failed",
            post(routes::compute::failed),
        )
        .route("/api/admin/nodes", get(routes::compute::admin_nodes))
        .route(
            "/api/admin/inference-nodes",
            get(routes::inference_nodes::inference_nodes),
        )
        .route(
            "/api/admin/placements",
            get(routes::inference_nodes::placements),
        )
        .route(
            "/api/admin/nodes/{node_id}/jobs",
            get(routes::compute::admin_node_jobs),
        )
        .route(
            "/api/admin/nodes/{node_id}/activate",
            post(routes::compute::activate),
        )
        .route(
            "/api/admin/nodes/{node_id}/deactivate",
            post(routes::compute::deactivate),
        )
        .route("/api/jobs", post(routes::compute::submit))
        .route("/api/jobs/my-jobs", get(routes::compute::my_jobs))
        .route("/api/jobs/{job_id}", get(routes::compute::get_job))
        .route("/api/jobs/{job_id}/cancel", post(routes::compute::cancel))
        .route("/api/jobs/{job_id}/logs", get(routes::compute::job_logs))
        .route(
            "/api/nodes/{node_id}/jobs/{job_id}/logs",
            post(routes::compute::node_logs),
        );
    // Streamed uploads: no body-size layer (the blob store enforces the model size limit while
    // it streams, answering 413) and no request timeout (a 20 GiB upload takes a while).
    let uploads = Router::new()
        .route("/api/models", post(routes::models::upload))
        .route(
            "/api/models/import",
            post(routes::models::import).layer(DefaultBodyLimit::max(body_bytes_max)),
        )
        .route(
            "/api/models/{model_id}/download",
            get(routes::models::download),
        )
        .route("/api/blobs", post(routes::blobs::upload))
        .route("/api/blobs/{cid}", get(routes::blobs::download))
        .route(
            "/api/nodes/{node_id}/blobs/{cid}",
            get(routes::blobs::node_input),
        )
        .route(
            "/api/nodes/{node_id}/models/{cid}",
            get(routes::blobs::node_model),
        )
        .route(
            "/api/nodes/{node_id}/jobs/{job_id}/outputs/{name}",
            put(routes::blobs::node_output),
        )
        .route(
            "/api/jobs/{job_id}/outputs/{name}",
            get(routes::blobs::job_output),
        )
        .layer(DefaultBodyLimit::disable());
    // Chat completions: a generation takes as long as it takes (and a stream longer), so no
    // request timeout; the body limit still holds.
    let chat = Router::new()
        .route("/api/v1/chat/completions", post(gateway::chat::completions))
        .route(
            "/api/v1/services/{service_id}/chat/completions",
            post(gateway::chat::service_completions),
        )
        .route(
            "/api/conversations/{conversation_id}/messages",
            post(routes::conversations::post_message),
        )
        .route(
            "/api/v1/completions",
            post(gateway::completions::completions),
        )
        .route(
            "/api/v1/services/{service_id}/completions",
            post(gateway::completions::service_completions),
        )
        .layer(DefaultBodyLimit::max(body_bytes_max));
    let limited = Router::new()
        .merge(api)
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/api/openapi.json", get(openapi::document_json))
        .route("/api/docs", get(openapi::docs::page))
        .route("/api/docs/app.js", get(openapi::docs::script))
        .route("/api/docs/app.css", get(openapi::docs::style))
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(body_bytes_max))
        .layer(RequestBodyLimitLayer::new(body_bytes_max))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(REQUEST_TIMEOUT_SECS),
        ));
    Router::new()
        .merge(uploads)
        .merge(chat)
        .merge(limited)
        .layer(axum::middleware::from_fn(answers::answers))
        .layer(axum::middleware::from_fn(metrics::count_responses))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The metrics listener's routes: `/metrics` only (the Prometheus text).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(routes::ops::metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create data dir {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("event store: {0}")]
    Store(#[from] aiforge_commands::StoreError),
    #[error("jwt key: {0}")]
    JwtKey(std::io::Error),
    #[error("accounts: {0}")]
    Accounts(String),
    #[error("nats: {0}")]
    Bus(#[from] bus::BusError),
    #[error("blob store: {0}")]
    Blobs(String),
    #[error("payments: {0}")]
    Payments(String),
    #[error("admin wallets: {0}")]
    AdminWallets(String),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error("gateway: {0}")]
    Gateway(String),
    #[error("local node: {0}")]
    LocalNode(String),
    #[error("web app: {0}")]
    Web(String),
}

/// Opens (and migrates) the configured database.
pub async fn open_database(settings: &Settings) -> Result<Database, StartError> {
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|e| StartError::DataDir(settings.data_dir.display().to_string(), e))?;
    let db = Database::connect(settings.database_url().expose_secret()).await?;
    db.migrate().await?;
    Ok(db)
}

/// `aiforge serve`: runs until SIGTERM or Ctrl-C, then stops accepting requests, lets requests
/// in flight finish, lets the projector and the bus publisher finish their batch, and closes the
/// database. Every event committed before the signal is durable and will be projected and
/// published (now or on the next start, from the checkpoints).
pub async fn serve(settings: Settings) -> Result<(), StartError> {
    let db = open_database(&settings).await?;
    let manual_clock = settings.manual_clock_start.map(|start| {
        tracing::warn!(%start, "running on a MANUAL clock (AIFORGE_MANUAL_CLOCK_START): time moves only through POST /api/ops/clock/advance; never do this in production");
        Arc::new(ManualClock::new(start))
    });
    let clock: Arc<dyn Clock> = match &manual_clock {
        Some(manual) => manual.clone(),
        None => Arc::new(SystemClock),
    };
    let jwt = JwtKeys::load_or_create(
        settings.jwt_secret.as_ref(),
        &settings.data_dir,
        settings.jwt_ttl_secs,
    )
    .map_err(StartError::JwtKey)?;
    let accounts = Accounts::new(db.clone(), clock.clone())
        .map_err(|e| StartError::Accounts(e.to_string()))?;
    let admins = Executor::<AdminWhitelist>::new(db.clone(), clock.clone(), AdminServices);
    seed_admins(&admins, &settings, clock.as_ref()).await?;
    let wallets = WalletAuth::new(
        db.clone(),
        clock.clone(),
        SignInMessages::new(
            *jwt.request_hash_key(),
            &settings.public_url,
            settings.chain_id,
            settings.sign_in_ttl_secs,
        ),
    );
    let groups = Groups::new(db.clone(), clock.clone());
    let payments = Arc::new(Payments::new(
        db.clone(),
        clock.clone(),
        payment_networks(&settings)?,
    ));
    let blobs = open_blob_store(&settings.blob_backend, &settings.data_dir).await?;
    let hf = HfImporter::new(HfSettings {
        base_url: settings.hf_base_url.clone(),
        token: settings.hf_token.clone(),
        ..HfSettings::default()
    })
    .map_err(|e| StartError::Blobs(e.to_string()))?;
    let marketplace = Arc::new(Marketplace::new(
        db.clone(),
        clock.clone(),
        payments.clone(),
    ));
    let projector = Projector::new(db.clone(), aiforge_projections::all());
    let views: Arc<dyn aiforge_commands::passes::Views> =
        Arc::new(aiforge_projections::views::ProjectedViews {
            db: db.clone(),
            projector: projector.clone(),
        });
    let compute = Arc::new(aiforge_commands::passes::compute::ComputeNetwork::new(
        Arc::new(
            aiforge_commands::compute::Compute::new(db.clone(), clock.clone())
                .with_heartbeat_timeout_secs(
                    i64::try_from(settings.node_heartbeat_timeout_secs).unwrap_or(i64::MAX),
                ),
        ),
        db.clone(),
        views.clone(),
    ));
    let event_bus = EventBus::default();
    let nats = match &settings.nats_url {
        Some(url) => Some(bus::connect_jetstream(url, bus::NatsTarget::default()).await?),
        None => None,
    };

    let (stop, stopped) = watch::channel(false);
    let projector_task = {
        let projector = projector.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { projector.run(stopped).await })
    };
    let reactor_task = {
        let reactor = Arc::new(SubscriptionActivation {
            payments: payments.clone(),
        });
        let db = db.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { aiforge_commands::reactor::run(db, reactor, stopped).await })
    };
    let api_reactor_task = {
        let reactor = Arc::new(ApiSubscriptionActivation {
            marketplace: marketplace.clone(),
        });
        let db = db.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { aiforge_commands::reactor::run(db, reactor, stopped).await })
    };
    let purchases_reactor_task = {
        let reactor = Arc::new(aiforge_commands::reactor::ModelPurchases {
            marketplace: marketplace.clone(),
        });
        let db = db.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move { aiforge_commands::reactor::run(db, reactor, stopped).await })
    };
    // The cluster's periodic tasks run on the holder of this lease; asked for once before the
    // schedulers start, so a lone instance is the holder from its first pass.
    let scheduler_lease =
        aiforge_commands::lease::Lease::for_database(&db, aiforge_commands::lease::SCHEDULER_LEASE);
    if let Err(e) = scheduler_lease.acquire_or_renew().await {
        tracing::warn!(error = %e, "the scheduler lease could not be asked for; retrying");
    }
    let lease_task = tokio::spawn(scheduler_lease.clone().keep(stopped.clone()));
    let scheduler_task = {
        let (views, marketplace, clock) = (views.clone(), marketplace.clone(), clock.clone());
        tokio::spawn(aiforge_commands::passes::every(
            scheduler_lease.clone(),
            Duration::from_secs(settings.listing_scheduler_secs),
            stopped.clone(),
            "listings",
            move || {
                let (views, marketplace, now) = (views.clone(), marketplace.clone(), clock.now());
                async move {
                    aiforge_commands::passes::listings::run_once(views.as_ref(), &marketplace, now)
                        .await
                        .map(drop)
                }
            },
        ))
    };
    // Assignments also go to nodes over JetStream when NATS is configured.
    let assignments_task = match &nats {
        Some(nats) => {
            let js = nats.context().clone();
            aiforge_commands::compute::assignments_stream(&js)
                .await
                .map_err(|e| StartError::Bus(bus::BusError::Nats(e.to_string())))?;
            let reactor = Arc::new(aiforge_commands::compute::AssignmentPublisher {
                js,
                compute: compute.commands.clone(),
            });
            let db = db.clone();
            let stopped = stopped.clone();
            Some(tokio::spawn(async move {
                aiforge_commands::reactor::run(db, reactor, stopped).await
            }))
        }
        None => None,
    };
    let compute_task = {
        let compute = compute.clone();
        tokio::spawn(aiforge_commands::passes::every(
            scheduler_lease.clone(),
            Duration::from_secs(aiforge_commands::passes::compute::COMPUTE_PASS_SECS),
            stopped.clone(),
            "compute",
            move || {
                let compute = compute.clone();
                async move { compute.run_once().await.map(drop) }
            },
        ))
    };
    // Holds of calls whose instance died before settling them count for nothing after their
    // TTL; the lease holder deletes them once a minute so the table does not grow.
    let holds_task = {
        let db = db.clone();
        tokio::spawn(aiforge_commands::passes::every(
            scheduler_lease.clone(),
            Duration::from_secs(HOLD_SWEEP_SECS),
            stopped.clone(),
            "expired holds",
            move || {
                let db = db.clone();
                async move {
                    aiforge_commands::gateway::admission::sweep_expired_holds(&db)
                        .await
                        .map(|swept| {
                            if swept > 0 {
                                tracing::info!(swept, "expired admission holds deleted");
                            }
                        })
                }
            },
        ))
    };
    let publisher_task = {
        let db = db.clone();
        let event_bus = event_bus.clone();
        let stopped = stopped.clone();
        tokio::spawn(async move {
            if let Err(e) = bus::run_publisher(db, event_bus, nats, stopped).await {
                tracing::error!(error = %e, "event publisher stopped");
            }
        })
    };

    // The gateway: its key index is caught up before the first request, then follows the log.
    let index = Arc::new(aiforge_commands::gateway::KeyIndex::with_plan_limits(
        settings.plan_limits.clone(),
    ));
    index
        .catch_up(&db)
        .await
        .map_err(|e| StartError::Gateway(e.to_string()))?;
    let index_task = tokio::spawn(index.clone().follow(db.clone(), stopped.clone()));
    let local_nodes = Arc::new(gateway::nodes::LocalNodes::new(
        gateway::local::LOCAL_NODE_ID,
    ));
    let local_model = gateway::local::load(&settings)
        .await
        .map_err(StartError::LocalNode)?;
    if let Some(model) = &local_model {
        gateway::local::serve(&local_nodes, model);
    }
    // Nodes: the in-process one first, then any node on NATS when a NATS URL is set, then the
    // in-process node's pool, which loads any other servable model on its first call (last, so
    // a model a NATS node already serves is not loaded here too).
    let mut transports: Vec<Arc<dyn gateway::nodes::NodeTransport>> = vec![local_nodes];
    let mut nats_directory = None;
    let mut placement_task = None;
    if let Some(url) = &settings.nats_url {
        let client = async_nats::connect(url.as_str())
            .await
            .map_err(|e| StartError::Gateway(format!("nats {url}: {e}")))?;
        let nats_nodes = gateway::nats::NatsNodes::connect(
            client.clone(),
            Duration::from_secs(settings.node_idle_timeout_secs),
            index.clone(),
        )
        .await
        .map_err(|e| StartError::Gateway(format!("nats {url}: {e}")))?;
        nats_directory = Some(nats_nodes.directory());
        let directory = nats_nodes.directory();
        transports.push(Arc::new(nats_nodes));
        // Models placed on `serve --auto` nodes (README, "Placement"), from the lease holder.
        let placer = Arc::new(gateway::placement::Placer {
            client,
            directory,
            db: db.clone(),
            index: index.clone(),
            projector: projector.clone(),
        });
        placement_task = Some(tokio::spawn(placer.run(
            scheduler_lease.clone(),
            event_bus.clone(),
            stopped.clone(),
        )));
    }
    if settings.local_node != settings::LocalNode::Off {
        transports.push(Arc::new(gateway::pool::ModelPool::new(
            gateway::local::LOCAL_NODE_ID,
            settings.serving_memory_bytes,
            settings.data_dir.join("serving"),
            marketplace.clone(),
            blobs.clone(),
        )));
    }
    let admission = Arc::new(aiforge_commands::gateway::Admission::new(
        db.clone(),
        aiforge_commands::gateway::Admission::store_for(&db),
        clock.clone(),
        index.clone(),
    ));
    let gateway = Arc::new(gateway::Gateway {
        calls: Arc::new(tokio::sync::Semaphore::new(gateway::CALLS_IN_FLIGHT_MAX)),
        index,
        admission,
        recorder: aiforge_commands::metering::UsageRecorder::start(db.clone(), clock.clone()),
        nodes: Arc::new(gateway::nodes::FirstAvailable(transports)),
        nats_directory,
        in_process_pool: settings.local_node != settings::LocalNode::Off,
    });

    let revenue_book = Arc::new(Executor::new(
        db.clone(),
        clock.clone(),
        aiforge_domain::revenue_book::RevenueBookServices,
    ));
    let payouts = Arc::new(payouts_of(&settings, &db, clock.clone(), views.clone()).await?);
    let state_clock = clock.clone();
    let state = AppState(Arc::new(AppParts {
        payouts,
        gateway,
        revenue_book,
        db: db.clone(),
        accounts: Arc::new(accounts),
        wallets: Arc::new(wallets),
        admins: Arc::new(admins),
        groups: Arc::new(groups),
        payments,
        payment_chains: payment_chains(&settings),
        projector,
        jwt: Arc::new(jwt),
        clock,
        bus: event_bus,
        marketplace,
        blobs,
        model_bytes_max: settings.model_bytes_max,
        job_blob_bytes_max: settings.job_blob_bytes_max,
        serving_memory_bytes: settings.serving_memory_bytes,
        hf: Arc::new(hf),
        manual_clock,
        compute,
        views,
        scheduler_lease: scheduler_lease.clone(),
        close_settle: settings.close_automatic.then(|| {
            time::Duration::seconds(i64::try_from(settings.close_settle_secs).unwrap_or(i64::MAX))
        }),
        session: Arc::new(session::SessionCookies::new(
            &settings.public_url,
            settings.jwt_ttl_secs,
        )),
        platform_keys: Arc::new(aiforge_commands::platform_keys::PlatformKeys::new(
            db.clone(),
            state_clock.clone(),
        )),
        conversations: Arc::new(aiforge_commands::conversations::Conversations::new(
            db.clone(),
        )),
        fees: Arc::new(aiforge_commands::fees::Fees::new(
            db.clone(),
            state_clock.clone(),
        )),
    }));
    // The scheduled close (README, "The monthly close"), on the lease holder.
    let close_task = state.close_settle.map(|settle| {
        let (book, clock) = (state.revenue_book.clone(), state.clock.clone());
        tokio::spawn(aiforge_commands::passes::every(
            scheduler_lease.clone(),
            Duration::from_secs(CLOSE_PASS_SECS),
            stopped.clone(),
            "monthly close",
            move || {
                let (book, clock) = (book.clone(), clock.clone());
                async move {
                    aiforge_projections::distribution::close_due(&book, &clock, settle)
                        .await
                        .map(drop)
                }
            },
        ))
    });
    // Money out (README, "Payouts"), on the lease holder.
    let payouts_task = {
        let payouts = state.payouts.clone();
        tokio::spawn(aiforge_commands::passes::every(
            scheduler_lease.clone(),
            Duration::from_secs(settings.payout_pass_secs),
            stopped.clone(),
            "payouts",
            move || {
                let payouts = payouts.clone();
                async move { payouts.run_once().await.map(drop) }
            },
        ))
    };
    // Heartbeats over NATS, beside the HTTP ones, when NATS is configured.
    let heartbeats_task = match &settings.nats_url {
        Some(url) => {
            let client = async_nats::connect(url.as_str())
                .await
                .map_err(|e| StartError::Gateway(format!("nats {url}: {e}")))?;
            Some(tokio::spawn(routes::compute::serve_nats_heartbeats(
                client,
                state.clone(),
                stopped.clone(),
            )))
        }
        None => None,
    };
    let demo = match (&local_model, settings.demo) {
        (Some(model), true) => Some(
            gateway::local::seed_demo(&state, model)
                .await
                .map_err(StartError::LocalNode)?,
        ),
        _ => None,
    };
    // The demo key works from the first request on: the index has read the demo's events.
    state
        .gateway
        .index
        .catch_up(&state.db)
        .await
        .map_err(|e| StartError::Gateway(e.to_string()))?;
    // The read models include every event written before this start (a restart after a crash
    // finds events its predecessor appended but never projected): the first read after a
    // restart sees them. Bounded: a very long catch-up serves meanwhile and says so.
    let head = state
        .db
        .log_head()
        .await
        .map_err(|e| StartError::Gateway(e.to_string()))?;
    if let Err(e) = state
        .projector
        .wait_for(head, Duration::from_secs(STARTUP_CATCH_UP_SECS))
        .await
    {
        tracing::warn!(error = %e, position = ?head, "the read models are still catching up with the log; serving meanwhile");
    }
    let web_app = web::WebApp::locate(settings.web_dir.as_deref()).map_err(StartError::Web)?;
    match &web_app {
        Some(app) => tracing::info!(dir = %app.dir().display(), "serving the web app at /"),
        None => tracing::info!("no web app: web/build not found (AIFORGE_WEB_DIR to set one)"),
    }
    // `/metrics` on a listener of its own, when one is configured (README, "/metrics").
    let metrics_task = match settings.metrics_bind {
        Some(bind) => {
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .map_err(|e| StartError::Bind(bind.to_string(), e))?;
            let address = listener
                .local_addr()
                .map_err(|e| StartError::Bind(bind.to_string(), e))?;
            println!("aiforge metrics listening on http://{address}");
            let app = metrics_router(state.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
                {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            }))
        }
        None => None,
    };
    let app = web::with_web_app(router(state, settings.body_bytes_max), web_app);
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .map_err(|e| StartError::Bind(settings.bind.to_string(), e))?;
    let address = listener
        .local_addr()
        .map_err(|e| StartError::Bind(settings.bind.to_string(), e))?;
    tracing::info!(%address, engine = settings.database_engine(), nats = settings.nats_url.is_some(), "aiforge listening");
    // A fixed line on stdout, so scripts and tests started with port 0 can find the port.
    println!("aiforge listening on http://{address}");
    if let Some(demo) = demo {
        println!("demo model: {}", demo.model_id);
        println!("demo service: {}", demo.service_id);
        println!("demo key (shown once): {}", demo.api_key);
        println!(
            "try: curl http://{address}/api/v1/chat/completions -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'",
            demo.api_key, demo.model_id
        );
    }

    // Streamed chunks are small: without TCP_NODELAY, Nagle's algorithm holds each one back
    // until the client's delayed ACK (~40 ms a stall).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // The peer's address reaches handlers (sign-in throttling per address).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(StartError::Serve)?;

    tracing::info!("shutting down: finishing projections and event publishing");
    let _ = stop.send(true);
    let grace = Duration::from_secs(SHUTDOWN_GRACE_SECS);
    let _ = tokio::time::timeout(grace, projector_task).await;
    let _ = tokio::time::timeout(grace, publisher_task).await;
    let _ = tokio::time::timeout(grace, reactor_task).await;
    let _ = tokio::time::timeout(grace, api_reactor_task).await;
    let _ = tokio::time::timeout(grace, purchases_reactor_task).await;
    let _ = tokio::time::timeout(grace, scheduler_task).await;
    let _ = tokio::time::timeout(grace, compute_task).await;
    let _ = tokio::time::timeout(grace, holds_task).await;
    if let Some(task) = assignments_task {
        let _ = tokio::time::timeout(grace, task).await;
    }
    if let Some(task) = placement_task {
        let _ = tokio::time::timeout(grace, task).await;
    }
    if let Some(task) = heartbeats_task {
        let _ = tokio::time::timeout(grace, task).await;
    }
    if let Some(task) = close_task {
        let _ = tokio::time::timeout(grace, task).await;
    }
    let _ = tokio::time::timeout(grace, payouts_task).await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    let _ = tokio::time::timeout(grace, index_task).await;
    let _ = tokio::time::timeout(grace, lease_task).await;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The payout commands and pass, with a hot wallet on each network whose key is configured.
pub async fn payouts_of(
    settings: &Settings,
    db: &Database,
    clock: Arc<dyn Clock>,
    views: Arc<dyn aiforge_commands::passes::Views>,
) -> Result<aiforge_commands::payouts::Payouts, StartError> {
    let mut hot_wallets: Vec<Arc<dyn aiforge_commands::payouts::HotWallet>> = Vec::new();
    if let (Some(eth), Some(key)) = (&settings.ethereum, &settings.eth_hot_wallet_key) {
        let wallet = aiforge_commands::chain::hot_wallet::EthereumHotWallet::connect(
            &secrecy::SecretString::from(eth.url.clone()),
            &eth.usdt_contract,
            key,
            Some(eth.confirmations),
        )
        .await
        .map_err(|e| StartError::Payments(e.to_string()))?;
        tracing::info!(address = %aiforge_commands::payouts::HotWallet::address(&wallet), "payouts on ethereum from the hot wallet");
        hot_wallets.push(Arc::new(wallet));
    }
    if let (Some(tron), Some(key)) = (&settings.tron, &settings.tron_hot_wallet_key) {
        let mut config = TronConfig::new(&tron.url, &tron.usdt_contract, &tron.platform_wallet);
        config.confirmations_min = tron.confirmations;
        config.api_key = tron.api_key.clone();
        let wallet = aiforge_commands::chain::tron_hot_wallet::TronHotWallet::new(
            config,
            key,
            settings.tron_fee_limit_sun,
        )
        .map_err(|e| StartError::Payments(e.to_string()))?;
        tracing::info!(address = %aiforge_commands::payouts::HotWallet::address(&wallet), "payouts on tron from the hot wallet");
        hot_wallets.push(Arc::new(wallet));
    }
    Ok(aiforge_commands::payouts::Payouts::new(
        db.clone(),
        clock,
        views,
        aiforge_commands::payouts::PayoutSettings {
            minimum: settings.payout_minimum,
            approval_threshold: settings.payout_approval_threshold,
            abort_after_sign: settings.payout_abort_after_sign,
            abort_after_broadcast: settings.payout_abort_after_broadcast,
            replace_after: time::Duration::seconds(
                i64::try_from(settings.payout_replace_after_secs).unwrap_or(i64::MAX),
            ),
            explorer_tx_urls: settings.explorer_tx_urls.clone(),
        },
        hot_wallets,
    ))
}

/// The configured blob store.
pub async fn open_blob_store(
    backend: &settings::BlobBackend,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn BlobStore>, StartError> {
    let blobs = |e: aiforge_commands::blob::BlobError| StartError::Blobs(e.to_string());
    Ok(match backend {
        settings::BlobBackend::Local(dir) => {
            let dir = dir.clone().unwrap_or_else(|| data_dir.join("blobs"));
            Arc::new(LocalBlobStore::open(&dir).await.map_err(blobs)?)
        }
        settings::BlobBackend::S3(s3) => {
            Arc::new(aiforge_commands::blob::s3::S3BlobStore::new(s3).map_err(blobs)?)
        }
        settings::BlobBackend::Ipfs(ipfs) => {
            Arc::new(aiforge_commands::blob::ipfs::IpfsBlobStore::new(ipfs.clone()).map_err(blobs)?)
        }
    })
}

/// The public half of each configured network's settings, for browser wallets. Addresses are
/// canonical (as payments' `pay_to`); a wallet that cannot be parsed failed startup already.
fn payment_chains(settings: &Settings) -> Arc<[routes::payments::PaymentChain]> {
    let chain = |network: Network, chain_id: Option<u64>, c: &settings::ChainSettings| {
        routes::payments::PaymentChain {
            network: match network {
                Network::Ethereum => "ethereum",
                Network::Tron => "tron",
            },
            chain_id,
            usdt_contract: c.usdt_contract.clone(),
            decimals: 6,
            platform_wallet: aiforge_commands::wallet_auth::parse_wallet(
                network,
                &c.platform_wallet,
            )
            .map(|w| w.address)
            .unwrap_or_else(|_| c.platform_wallet.clone()),
            confirmations: c.confirmations,
        }
    };
    let mut chains = Vec::new();
    if let Some(eth) = &settings.ethereum {
        chains.push(chain(Network::Ethereum, Some(settings.chain_id), eth));
    }
    if let Some(tron) = &settings.tron {
        chains.push(chain(Network::Tron, None, tron));
    }
    chains.into()
}

/// The chain verifiers of the networks whose settings are complete.
fn payment_networks(settings: &Settings) -> Result<HashMap<Network, PaymentNetwork>, StartError> {
    let mut networks = HashMap::new();
    if let Some(eth) = &settings.ethereum {
        let mut config =
            EthereumConfig::new(eth.url.clone(), &eth.usdt_contract, &eth.platform_wallet);
        config.confirmations_min = eth.confirmations;
        let verifier =
            EthereumVerifier::new(config).map_err(|e| StartError::Payments(e.to_string()))?;
        let platform_wallet =
            aiforge_commands::wallet_auth::parse_wallet(Network::Ethereum, &eth.platform_wallet)
                .map_err(|e| StartError::Payments(e.to_string()))?
                .address;
        networks.insert(
            Network::Ethereum,
            PaymentNetwork {
                verifier: Arc::new(verifier),
                platform_wallet,
            },
        );
    }
    if let Some(tron) = &settings.tron {
        let mut config = TronConfig::new(&tron.url, &tron.usdt_contract, &tron.platform_wallet);
        config.confirmations_min = tron.confirmations;
        config.api_key = tron.api_key.clone();
        let verifier =
            TronVerifier::new(config).map_err(|e| StartError::Payments(e.to_string()))?;
        let platform_wallet =
            aiforge_commands::wallet_auth::parse_wallet(Network::Tron, &tron.platform_wallet)
                .map_err(|e| StartError::Payments(e.to_string()))?
                .address;
        networks.insert(
            Network::Tron,
            PaymentNetwork {
                verifier: Arc::new(verifier),
                platform_wallet,
            },
        );
    }
    Ok(networks)
}

/// Parses one `AIFORGE_ADMIN_WALLETS` entry: `0x…`, `T…` or `network:address`.
pub fn parse_admin_wallet(entry: &str) -> Result<Wallet, String> {
    let (network, address) = match entry.split_once(':') {
        Some((network, address)) => (
            network
                .parse::<Network>()
                .map_err(|e| format!("'{entry}': {e}"))?,
            address,
        ),
        None if entry.starts_with("0x") => (Network::Ethereum, entry),
        None => (Network::Tron, entry),
    };
    aiforge_commands::wallet_auth::parse_wallet(network, address)
        .map_err(|e| format!("'{entry}': {e}"))
}

/// Seeds the whitelist from settings on first start (the aggregate ignores later seeds).
async fn seed_admins(
    admins: &Executor<AdminWhitelist>,
    settings: &Settings,
    clock: &dyn Clock,
) -> Result<(), StartError> {
    let wallets = settings
        .admin_wallets
        .iter()
        .map(|entry| parse_admin_wallet(entry))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StartError::AdminWallets)?;
    if wallets.is_empty() {
        return Ok(());
    }
    let command = AdminCommand::Seed {
        wallets,
        at: clock.now(),
    };
    admins
        .execute(
            ADMIN_WHITELIST_ID,
            command,
            &aiforge_commands::CommandMeta::generated(Some("settings".into())),
            &[],
        )
        .await
        .map_err(|e| StartError::AdminWallets(e.to_string()))?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

//! Schemas of the answers that handlers build with `json!`: one struct per shape, with the
//! fields the handler writes, for the document only (nothing constructs them). Request bodies
//! are not here: they derive `ToSchema` where they are parsed (`routes/*.rs`), and domain
//! types where they are defined. Times are RFC 3339 strings; money is a decimal string
//! ([`Usdt`]) everywhere, never a number.

use std::collections::BTreeMap;

use aiforge_domain::job::{JobSpec, Output};
use aiforge_domain::model::ModelSource;
use aiforge_domain::node::Resources;
use aiforge_domain::service::{Pricing, RateLimits};
use aiforge_domain::subscription::PlanId;
use aiforge_domain::Usdt;
use aiforge_projections::admins::AdminWalletRow;
use aiforge_projections::groups::{GroupRow, MemberRow};
use aiforge_projections::payments::{PaymentRow, PostingRow};
use aiforge_projections::users::UserRow;
use serde_json::Value;
use utoipa::ToSchema;

// ---- errors ----------------------------------------------------------------------------------

/// The platform API's one error shape (`crate::error::ApiError`).
#[derive(ToSchema)]
pub struct ApiErrorBody {
    pub error: ApiErrorDetail,
}

#[derive(ToSchema)]
pub struct ApiErrorDetail {
    /// Stable and machine-readable (`not_found`, `invalid_field`, `already_taken`, ...):
    /// clients branch on this, not on the message.
    #[schema(example = "invalid_field")]
    pub code: String,
    /// For people; 5xx answers say no more than "internal server error".
    pub message: String,
    /// The request field at fault, when one is.
    #[schema(nullable = false)]
    pub field: Option<String>,
}

/// OpenAI's error shape, answered by every `/api/v1` route (`crate::routes::openai::OpenAiError`).
#[derive(ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `rate_limit_error`, `server_error`, ...
    #[schema(rename = "type", example = "invalid_request_error")]
    pub kind: String,
    /// The request parameter at fault, or null.
    pub param: Option<String>,
    #[schema(example = "invalid_api_key")]
    pub code: String,
}

// ---- accounts and wallets --------------------------------------------------------------------

#[derive(ToSchema)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
    pub username: Option<String>,
    /// Present for an account created by a wallet sign-in.
    #[schema(nullable = false)]
    pub wallet: Option<String>,
    pub registered_at: String,
}

#[derive(ToSchema)]
pub struct Registered {
    pub user: User,
}

/// The answer of a sign-out.
#[derive(ToSchema)]
pub struct SignedOut {
    #[schema(example = true)]
    pub signed_out: bool,
}

#[derive(ToSchema)]
pub struct SessionToken {
    /// A JWT for `Authorization: Bearer`.
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: String,
    pub expires_in: i64,
    pub user_id: String,
}

#[derive(ToSchema)]
pub struct WalletRef {
    #[schema(example = "ethereum")]
    pub network: String,
    pub address: String,
}

#[derive(ToSchema)]
pub struct WalletSession {
    pub access_token: String,
    #[schema(example = "bearer")]
    pub token_type: String,
    pub expires_in: i64,
    pub user_id: String,
    pub wallet: WalletRef,
    /// The signature created the account (a wallet seen for the first time).
    pub account_created: bool,
    pub is_admin: bool,
}

/// A wallet on an account (`routes::wallets::wallet_json`).
#[derive(ToSchema)]
pub struct AccountWallet {
    pub network: String,
    pub address: String,
    pub verified: bool,
    pub connected_at: String,
    pub verified_at: Option<String>,
    /// This wallet receives the account's payouts on its network.
    pub payout: bool,
}

#[derive(ToSchema)]
pub struct Me {
    pub id: String,
    pub email: Option<String>,
    pub username: Option<String>,
    pub wallet: Option<String>,
    pub registered_at: String,
    pub wallets: Vec<AccountWallet>,
    /// `network:address` of the wallet this session signed in with, if any.
    pub signed_in_with: Option<String>,
    pub is_admin: bool,
}

#[derive(ToSchema)]
pub struct AuthMessage {
    pub network: String,
    pub address: String,
    pub domain: String,
    /// The text to sign (EIP-4361 style).
    pub message: String,
    pub nonce: String,
    pub issued_at: String,
    pub expires_at: String,
}

#[derive(ToSchema)]
pub struct WalletState {
    pub network: String,
    pub address: String,
    pub verified: bool,
}

#[derive(ToSchema)]
pub struct WalletChanged {
    pub wallet: WalletState,
}

#[derive(ToSchema)]
pub struct PayoutWalletChosen {
    pub payout_wallet: PayoutWallet,
}

#[derive(ToSchema)]
pub struct PayoutWallet {
    pub network: String,
    pub address: String,
}

#[derive(ToSchema)]
pub struct AccountWallets {
    pub wallets: Vec<AccountWallet>,
}

// ---- admin -----------------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct AdminWallets {
    pub wallets: Vec<AdminWalletRow>,
}

#[derive(ToSchema)]
pub struct AdminWalletAdded {
    pub added: WalletRef,
}

#[derive(ToSchema)]
pub struct AdminWalletRemoved {
    pub removed: WalletRef,
}

#[derive(ToSchema)]
pub struct UsersPage {
    pub users: Vec<UserRow>,
    /// The search, trimmed; null when every account is listed.
    pub q: Option<String>,
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
}

#[derive(ToSchema)]
pub struct UserCounts {
    pub total: i64,
    pub with_email: i64,
    pub created_by_wallet: i64,
    /// Users with a metered call (API or chat) in the last 30 days.
    pub active_30d: i64,
    pub deactivated: i64,
}

#[derive(ToSchema)]
pub struct AdminPaymentsPage {
    pub payments: Vec<PaymentRow>,
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
}

#[derive(ToSchema)]
pub struct AdminUserAnswer {
    pub user: UserRow,
}

#[derive(ToSchema)]
pub struct AdminUserPlan {
    #[schema(example = "pro")]
    pub plan: String,
    pub starts_at: String,
    pub ends_at: Option<String>,
}

#[derive(ToSchema)]
pub struct AdminUserNode {
    pub id: String,
    pub name: String,
    pub status: String,
    pub registered_at: String,
}

/// One user in full (`GET /api/admin/users/{user_id}`).
#[derive(ToSchema)]
pub struct AdminUserDetails {
    pub user: UserRow,
    pub wallets: Vec<AccountWallet>,
    /// The plan in force now, if any.
    pub plan: Option<AdminUserPlan>,
    pub api_subscriptions: Vec<ApiSubscriptionBody>,
    pub models: Vec<ModelBody>,
    pub groups: Vec<GroupWithRole>,
    pub nodes: Vec<AdminUserNode>,
    /// The newest 50 payments; `payments_total` counts all.
    pub payments: Vec<PaymentRow>,
    pub payments_total: i64,
}

#[derive(ToSchema)]
pub struct RevenueThisMonth {
    #[schema(example = "2026-12")]
    pub month: String,
    pub by_type: Vec<RevenueTypeLine>,
}

#[derive(ToSchema)]
pub struct WalletCounts {
    pub connected: i64,
    pub verified: i64,
}

#[derive(ToSchema)]
pub struct PaymentCounts {
    pub total: i64,
    pub confirmed: i64,
    pub platform_fees: Usdt,
}

#[derive(ToSchema)]
pub struct JobRevenue {
    pub gross: Usdt,
    pub platform_fee: Usdt,
    pub to_nodes: Usdt,
}

#[derive(ToSchema)]
pub struct JobMoney {
    pub in_escrow: Usdt,
    pub owed_to_nodes: Usdt,
}

#[derive(ToSchema)]
pub struct ComputeCounts {
    /// Nodes by status.
    pub nodes: BTreeMap<String, i64>,
    /// Jobs by status.
    pub jobs: BTreeMap<String, i64>,
    pub job_revenue: JobRevenue,
    pub job_money: JobMoney,
}

#[derive(ToSchema)]
pub struct PlatformStats {
    pub users: UserCounts,
    pub wallets: WalletCounts,
    pub admin_wallets: i64,
    pub groups: i64,
    pub payments: PaymentCounts,
    pub compute: ComputeCounts,
    /// Users with each plan in force now.
    pub plans_active: BTreeMap<String, i64>,
    pub api_subscriptions_active: i64,
    /// Models by state (`uploaded`, `listed`, `grace`, `delisted`, `deleted`).
    pub models: BTreeMap<String, i64>,
    pub revenue_this_month: RevenueThisMonth,
    /// Events in the log.
    pub events: i64,
}

// ---- groups ----------------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct GroupWithMembers {
    pub group: GroupRow,
    pub members: Vec<MemberRow>,
}

#[derive(ToSchema)]
pub struct GroupWithRole {
    pub group: GroupRow,
    #[schema(example = "OWNER")]
    pub role: String,
}

#[derive(ToSchema)]
pub struct MyGroups {
    pub groups: Vec<GroupWithRole>,
}

#[derive(ToSchema)]
pub struct GroupLeft {
    /// The group's id.
    pub left: String,
}

// ---- payments and platform subscriptions -----------------------------------------------------

#[derive(ToSchema)]
pub struct PaymentBody {
    pub payment: PaymentRow,
}

#[derive(ToSchema)]
pub struct VerificationPending {
    #[schema(example = "pending")]
    pub status: String,
    pub confirmations: u64,
    pub required_confirmations: u64,
}

/// A payment whose transaction is not final yet (202): poll again.
#[derive(ToSchema)]
pub struct PaymentPending {
    pub payment: PaymentRow,
    pub verification: VerificationPending,
}

#[derive(ToSchema)]
pub struct PaymentsPage {
    pub payments: Vec<PaymentRow>,
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
}

#[derive(ToSchema)]
pub struct PlanBody {
    pub id: PlanId,
    pub name: String,
    pub price_per_month: Usdt,
    pub requests_per_month: u64,
    pub tokens_per_month: u64,
}

#[derive(ToSchema)]
pub struct Plans {
    pub plans: Vec<PlanBody>,
}

#[derive(ToSchema)]
pub struct PlanPeriod {
    pub plan: PlanId,
    pub starts_at: String,
    pub ends_at: Option<String>,
}

#[derive(ToSchema)]
pub struct AwaitingPayment {
    pub plan: PlanId,
    pub payment_id: String,
}

#[derive(ToSchema)]
pub struct PlatformSubscription {
    pub active: Option<PlanPeriod>,
    pub upcoming: Vec<PlanPeriod>,
    pub awaiting_payment: Option<AwaitingPayment>,
    pub cancelled: bool,
}

#[derive(ToSchema)]
pub struct PlatformSubscriptionBody {
    pub subscription: PlatformSubscription,
    /// Only when subscribing to a paid plan: the payment to make.
    #[schema(nullable = false)]
    pub payment: Option<PaymentRow>,
}

#[derive(ToSchema)]
pub struct LedgerBalance {
    pub account: String,
    pub kind: String,
    pub balance: Usdt,
    pub postings: i64,
}

#[derive(ToSchema)]
pub struct Ledger {
    pub accounts: Vec<LedgerBalance>,
    /// The balances' sum in micro-USDT, as a decimal string: always "0".
    #[schema(example = "0")]
    pub sum_micros: String,
}

#[derive(ToSchema)]
pub struct LedgerAccount {
    pub account: String,
    pub postings: Vec<PostingRow>,
}

// ---- models and publishing -------------------------------------------------------------------

#[derive(ToSchema)]
pub struct ModelOwnerRef {
    /// `user` or `group`.
    pub kind: String,
    pub id: String,
}

/// A model (`routes::models::model_json`).
#[derive(ToSchema)]
pub struct ModelBody {
    pub id: String,
    pub owner: ModelOwnerRef,
    pub uploaded_by: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub sha256: String,
    pub cid: String,
    pub size_bytes: i64,
    /// The blob store backend: `local`, `s3` or `ipfs`.
    pub storage: String,
    pub source: ModelSource,
    /// `uploaded`, `listed`, `grace`, `delisted` or `deleted`.
    pub state: String,
    pub published_at: Option<String>,
    pub listed_until: Option<String>,
    pub grace_until: Option<String>,
    pub uploaded_at: String,
    pub updated_at: String,
    /// The price a purchase costs now (null: not for sale).
    pub sale_price: Option<Usdt>,
    /// Whether the caller bought it (in `GET /api/models/{id}` only).
    pub purchased: Option<bool>,
    /// Whether an engine here can serve the file (judged at upload from its GGUF header);
    /// `null` for a model recorded before uploads were judged. A model that is not servable may
    /// be sold as a download but gets no API service (422 `model_not_servable`).
    pub servable: Option<bool>,
    pub serving: Option<ModelServing>,
}

/// What the upload's judgement found (`routes::models::serving_json`).
#[derive(ToSchema)]
pub struct ModelServing {
    /// `servable` or `not_servable`.
    pub status: String,
    /// `candle` (the built-in GGUF engine), `llama_cpp` (llama.cpp, on nodes built with the `llama`
    /// feature) or `upstream` (an upstream model card); servable only.
    pub engine: Option<String>,
    /// `general.architecture` of the GGUF file.
    pub architecture: Option<String>,
    /// The most common tensor type (`Q4_1`, `Q8_0`, ...).
    pub quantisation: Option<String>,
    /// Memory the engine needs for it (weights as loaded and a full KV cache).
    pub memory_bytes: Option<u64>,
    pub context_tokens: Option<u32>,
    /// Why not: `code` (`not_gguf`, `unreadable_gguf`, `architecture`, `quantisation`,
    /// `tokenizer`, `too_large`) and `message`; not servable only.
    pub reason: Option<ServingReason>,
}

#[derive(ToSchema)]
pub struct ServingReason {
    pub code: String,
    pub message: String,
}

#[derive(ToSchema)]
pub struct ModelAnswer {
    pub model: ModelBody,
}

#[derive(ToSchema)]
pub struct Models {
    pub models: Vec<ModelBody>,
}

#[derive(ToSchema)]
pub struct Publishing {
    pub model_id: String,
    pub state: String,
    pub published_at: Option<String>,
    pub listed_until: Option<String>,
    pub grace_until: Option<String>,
    /// "0.000000" while the caller's first publication is free.
    pub publishing_fee: Usdt,
    pub first_publication_free_available: bool,
    pub listing_fee: Usdt,
    pub listing_period_days: i64,
    pub grace_days: i64,
    pub fee_schedule_version: u32,
}

// ---- marketplace -----------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct ServiceModel {
    pub id: String,
    pub name: String,
    pub state: String,
}

/// An API service (`routes::marketplace::service_json`).
#[derive(ToSchema)]
pub struct ServiceBody {
    pub id: String,
    pub owner: String,
    pub model: ServiceModel,
    pub name: String,
    pub description: String,
    pub pricing: Pricing,
    pub pricing_version: i32,
    pub rate_limits: RateLimits,
    pub active: bool,
    /// Holders of a platform plan may call the model under their plan (the creator opts in).
    pub included_in_plans: bool,
    pub subscribers: i32,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(ToSchema)]
pub struct ServiceAnswer {
    pub service: ServiceBody,
}

#[derive(ToSchema)]
pub struct Services {
    pub services: Vec<ServiceBody>,
}

#[derive(ToSchema)]
pub struct ServicesPage {
    pub services: Vec<ServiceBody>,
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
}

/// An API subscription (`routes::marketplace::subscription_json`); the key itself is never
/// here, only its hint.
#[derive(ToSchema)]
pub struct ApiSubscriptionBody {
    pub id: String,
    pub service_id: String,
    pub model_id: String,
    /// `pending_payment`, `active` or `cancelled`.
    pub status: Option<String>,
    pub pricing: Pricing,
    pub pricing_version: i32,
    pub amount_due: Usdt,
    pub credit: Usdt,
    pub payment_id: Option<String>,
    #[schema(example = "aiforge_…a1b2")]
    pub api_key_hint: Option<String>,
    pub period_end: Option<String>,
    pub requested_at: String,
    pub activated_at: Option<String>,
    pub cancelled_at: Option<String>,
    /// On the app clock: `pending_payment`, `active`, `grace` (past `period_end`, the key still
    /// works), `expired` (the key is refused with `subscription_expired`) or `cancelled`.
    pub state: Option<String>,
    /// When the grace after `period_end` ends (null: pay-per-request, no period).
    pub grace_until: Option<String>,
    /// What a renewal costs (null: pay-per-request, nothing to renew).
    pub renewal_price: Option<Usdt>,
    /// Whether its credit may be topped up (pay-per-request and hybrid).
    pub accepts_top_up: bool,
}

/// One item of the marketplace search: a public service or a published model.
#[derive(ToSchema)]
pub struct MarketItem {
    /// `service` or `model`.
    pub kind: String,
    /// The service's id, or the model's.
    pub id: String,
    pub model_id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub owner: ModelOwnerRef,
    /// A service's sort price (monthly fee; per-request price for pay-per-request); a model's
    /// sale price (null: not for sale).
    pub price: Option<Usdt>,
    /// A service's pricing kind (null for a model).
    pub pricing_kind: Option<String>,
    /// Requests in the last 30 days (app clock).
    pub requests_30d: i64,
    pub created_at: String,
}

#[derive(ToSchema)]
pub struct MarketItemsPage {
    pub items: Vec<MarketItem>,
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
}

#[derive(ToSchema)]
pub struct MarketModelBody {
    pub id: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub size_bytes: i64,
    pub sha256: String,
    pub cid: String,
    pub owner: ModelOwnerRef,
    pub state: String,
    pub published_at: Option<String>,
    /// Null: not for sale.
    pub sale_price: Option<Usdt>,
    /// Whether an engine here serves the file (as in `GET /api/models/{id}`).
    pub servable: Option<bool>,
    pub serving: Option<ModelServing>,
}

#[derive(ToSchema)]
pub struct Usage30Days {
    pub requests: i64,
    pub tokens: i64,
}

#[derive(ToSchema)]
pub struct MarketModel {
    pub model: MarketModelBody,
    pub services: Vec<ServiceBody>,
    pub usage_30d: Usage30Days,
}

/// A model's sale price now.
#[derive(ToSchema)]
pub struct SalePrice {
    pub model_id: String,
    /// Null: not for sale.
    pub sale_price: Option<Usdt>,
}

/// A model purchase asked for: the `model_sale` payment to make.
#[derive(ToSchema)]
pub struct Purchase {
    pub model_id: String,
    /// The price the payment was created at.
    pub price: Usdt,
    pub payment: Option<PaymentRow>,
}

/// A renewal or top-up asked for: the payment to make.
#[derive(ToSchema)]
pub struct PaymentOnSubscription {
    pub subscription: ApiSubscriptionBody,
    pub amount_due: Usdt,
    /// The payment to make (null: a free service's renewal, done at once).
    pub payment: Option<PaymentRow>,
}

#[derive(ToSchema)]
pub struct Subscribed {
    pub subscription: ApiSubscriptionBody,
    /// The API key, shown this once (the platform keeps only its SHA-256).
    #[schema(example = "aiforge_…")]
    pub api_key: String,
    pub api_key_notice: String,
    pub amount_due: Usdt,
    /// The payment to make when anything is due.
    pub payment: Option<PaymentRow>,
}

#[derive(ToSchema)]
pub struct KeyRegenerated {
    pub subscription_id: String,
    /// The new key, shown this once; the previous one no longer works.
    pub api_key: String,
    pub api_key_notice: String,
}

#[derive(ToSchema)]
pub struct ApiSubscriptionAnswer {
    pub subscription: ApiSubscriptionBody,
}

#[derive(ToSchema)]
pub struct ApiSubscriptions {
    pub subscriptions: Vec<ApiSubscriptionBody>,
}

#[derive(ToSchema)]
pub struct UsagePeriod {
    pub start: String,
    pub end: String,
    pub requests: u64,
    pub tokens: u64,
}

/// The service's monthly quota and what is left of it this period (null: unlimited).
#[derive(ToSchema)]
pub struct QuotaLeft {
    pub requests_per_month: Option<u64>,
    pub tokens_per_month: Option<u64>,
    pub requests_remaining: Option<u64>,
    pub tokens_remaining: Option<u64>,
}

#[derive(ToSchema)]
pub struct SubscriptionUsage {
    pub subscription_id: String,
    /// This quota period's counters (30 days from activation; null before activation).
    pub period: Option<UsagePeriod>,
    pub quota: Option<QuotaLeft>,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cost: Usdt,
    pub credit: Usdt,
    pub credit_remaining: Usdt,
}

// ---- revenue ---------------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct SplitShare {
    pub user_id: String,
    /// A decimal string, e.g. "33.33".
    pub percent: String,
}

#[derive(ToSchema)]
pub struct SplitBody {
    pub version: u32,
    pub effective_from: String,
    pub set_by: String,
    pub set_at: String,
    pub shares: Vec<SplitShare>,
}

#[derive(ToSchema)]
pub struct GroupModelSplit {
    pub model_id: String,
    pub group_id: String,
    /// The split in force now, if any.
    pub current: Option<SplitBody>,
    /// A split set for a coming month, if any.
    pub pending: Option<SplitBody>,
}

/// One payout of a closed month (`routes::revenue::payout_json`).
#[derive(ToSchema)]
pub struct Payout {
    #[schema(example = "2026-11")]
    pub month: String,
    pub user_id: String,
    pub model_id: String,
    /// `pool` (subscription pool share) or `group_api` (a group model's split).
    pub source: String,
    pub amount: Usdt,
    pub split_version: Option<i64>,
}

/// A month's close as recorded by `MonthClosed` (`aiforge_domain::revenue_book::MonthDistribution`);
/// its main fields here, the nested records as objects.
#[derive(ToSchema)]
pub struct MonthDistributionBody {
    #[schema(example = "2026-11")]
    pub month: String,
    /// The log position the close read up to.
    pub through: Value,
    pub prior: Vec<Value>,
    pub pool_total: Usdt,
    pub pool_distributed: Usdt,
    pub tokens_total: u64,
    pub group_api_total: Usdt,
    /// The fee versions of the pool's payments.
    pub fee_schedule_versions: Vec<u32>,
    /// Every fee version of the month's payments and job settlements, sorted; absent in closes
    /// made before closes named them.
    #[schema(nullable = false)]
    pub fee_schedule_versions_used: Option<Vec<u32>>,
    pub models: Vec<Value>,
    pub payouts: Vec<Value>,
    pub corrections: Vec<Value>,
    pub postings: Vec<Value>,
    pub usage_events: u64,
    pub payments: u64,
    pub input_digest: String,
    pub digest: String,
    /// The close's rule (`POOL_RULE_*`: 3 pays registered inference nodes); absent = 1.
    pub pool_rule_version: Option<u32>,
    /// What registered inference nodes are paid, by node and fee version (absent when none).
    pub compute: Option<Vec<Value>>,
    /// The sum of `compute`, paid out of the platform's fees (absent when zero).
    pub compute_total: Option<Usdt>,
}

#[derive(ToSchema)]
pub struct MonthClosed {
    pub closed: MonthDistributionBody,
}

#[derive(ToSchema)]
pub struct RevenueTypeLine {
    #[schema(rename = "type")]
    pub kind: String,
    pub count: i64,
    pub gross: Usdt,
    pub platform_fee: Usdt,
    pub net: Usdt,
}

#[derive(ToSchema)]
pub struct DistributionTotals {
    pub months_closed: i64,
    pub last_closed: Option<String>,
    pub pool_distributed: Usdt,
    pub group_api_distributed: Usdt,
}

#[derive(ToSchema)]
pub struct RevenueBalances {
    pub platform_fees: Usdt,
    pub subscription_pools_undistributed: Usdt,
    pub group_revenue_undistributed: Usdt,
    pub creator_payables: Usdt,
}

#[derive(ToSchema)]
pub struct RevenueSummary {
    pub total_revenue: Usdt,
    pub platform_fees: Usdt,
    /// What monthly closes paid inference nodes out of the platform's fees.
    pub compute_paid: Usdt,
    /// `platform_fees` less `compute_paid`.
    pub platform_net: Usdt,
    pub net_to_others: Usdt,
    pub by_type: Vec<RevenueTypeLine>,
    pub distribution: DistributionTotals,
    pub balances: RevenueBalances,
}

#[derive(ToSchema)]
pub struct MonthlyRevenue {
    pub month: String,
    pub total_revenue: Usdt,
    pub platform_fees: Usdt,
    /// What the month's close paid inference nodes (0 until it is closed).
    pub compute_paid: Usdt,
    /// `platform_fees` less `compute_paid`.
    pub platform_net: Usdt,
    pub by_type: Vec<RevenueTypeLine>,
    pub closed: bool,
    pub digest: Option<String>,
}

#[derive(ToSchema)]
pub struct RecordedDistribution {
    pub month: String,
    pub closed_by: String,
    pub closed_at: String,
    pub distribution: MonthDistributionBody,
}

#[derive(ToSchema)]
pub struct ModelMonthUsage {
    pub requests: i64,
    pub tokens: i64,
    pub pay_per_use_charged: Usdt,
}

#[derive(ToSchema)]
pub struct ModelMonthLine {
    pub tokens: i64,
    pub requests: i64,
    pub usage_percent: String,
    pub pool_share: Usdt,
    pub group_api_revenue: Usdt,
}

#[derive(ToSchema)]
pub struct ModelMonthRevenue {
    pub model_id: String,
    pub month: String,
    pub usage: ModelMonthUsage,
    pub closed: bool,
    /// The model's line of the close, once the month is closed.
    pub distribution: Option<ModelMonthLine>,
    pub payouts: Vec<Payout>,
}

#[derive(ToSchema)]
pub struct EarningsMonth {
    pub month: String,
    pub api_and_sales: Usdt,
    pub subscription_pool: Usdt,
    pub group_api: Usdt,
    pub total: Usdt,
}

#[derive(ToSchema)]
pub struct MyEarnings {
    pub user_id: String,
    /// The month asked for (`YYYY-MM`), or null for all months.
    pub month: Option<String>,
    pub total: Usdt,
    pub payable_balance: Usdt,
    pub by_month: Vec<EarningsMonth>,
    pub payouts: Vec<Payout>,
}

#[derive(ToSchema)]
pub struct GroupModelDistribution {
    pub model_id: String,
    pub group_id: String,
    pub month: String,
    pub distributed: bool,
    pub closed_at: String,
    pub digest: String,
    pub pool_share: Usdt,
    pub group_api_revenue: Usdt,
    pub total: Usdt,
    pub members: Vec<Payout>,
}

#[derive(ToSchema)]
pub struct MyGroupEarnings {
    pub user_id: String,
    pub total: Usdt,
    pub earnings: Vec<Payout>,
}

// ---- OpenAI-compatible -----------------------------------------------------------------------

#[derive(ToSchema)]
pub struct ModelObject {
    pub id: String,
    #[schema(example = "model")]
    pub object: String,
    /// Unix seconds.
    pub created: i64,
    pub owned_by: String,
    pub name: String,
}

#[derive(ToSchema)]
pub struct ModelList {
    #[schema(example = "list")]
    pub object: String,
    pub data: Vec<ModelObject>,
}

#[derive(ToSchema)]
pub struct ChatMessageIn {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// A string, or an array of `{"type": "text", "text": ...}` parts.
    pub content: Value,
}

/// OpenAI's chat completion request: the fields that take effect. OpenAI's other fields
/// (`user`, `metadata`, `logprobs`, ...) are accepted and ignored, `n` must be 1, `tools` empty,
/// `response_format` text; any other field is refused (400).
#[derive(ToSchema)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessageIn>,
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    #[schema(minimum = 1)]
    pub max_completion_tokens: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// A string or an array of strings.
    pub stop: Option<Value>,
    pub seed: Option<i64>,
    /// Answer as server-sent events (`text/event-stream`) of `chat.completion.chunk` objects,
    /// ending with `data: [DONE]`.
    pub stream: Option<bool>,
    /// `{"include_usage": true}` adds a last chunk with the usage.
    pub stream_options: Option<Value>,
}

#[derive(ToSchema)]
pub struct ChatMessageOut {
    #[schema(example = "assistant")]
    pub role: String,
    pub content: String,
    pub refusal: Option<String>,
}

#[derive(ToSchema)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ChatMessageOut,
    pub logprobs: Option<Value>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

#[derive(ToSchema)]
pub struct ChatUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

#[derive(ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    #[schema(example = "chat.completion")]
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: ChatUsage,
    pub system_fingerprint: Option<String>,
}

/// OpenAI's legacy completion request (autocomplete clients): one prompt; `max_tokens`
/// defaults to 16 as OpenAI's; `stop`, sampling, `seed`, `stream`, `stream_options` as the
/// chat request; `echo` false, `best_of` 1, `logprobs` null and an empty `suffix` are accepted;
/// any other field is refused (400).
#[derive(ToSchema)]
pub struct CompletionRequest {
    pub model: String,
    /// A string, or an array holding one string.
    pub prompt: Value,
    #[schema(minimum = 1)]
    pub max_tokens: Option<u32>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[schema(exclusive_minimum = 0, maximum = 1)]
    pub top_p: Option<f64>,
    /// A string or an array of up to 16 strings.
    pub stop: Option<Value>,
    pub seed: Option<i64>,
    /// Answer as server-sent events of `text_completion` objects, ending with `data: [DONE]`.
    pub stream: Option<bool>,
    pub stream_options: Option<Value>,
}

#[derive(ToSchema)]
pub struct TextChoice {
    pub text: String,
    pub index: u32,
    pub logprobs: Option<Value>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

#[derive(ToSchema)]
pub struct TextCompletion {
    pub id: String,
    #[schema(example = "text_completion")]
    pub object: String,
    pub created: i64,
    pub model: String,
    pub choices: Vec<TextChoice>,
    pub usage: ChatUsage,
    pub system_fingerprint: Option<String>,
}

// ---- ops -------------------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

#[derive(ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: String,
    /// `sqlite` or `postgres`.
    pub engine: String,
}

#[derive(ToSchema)]
pub struct ClockAdvanced {
    pub now: String,
    /// Listing changes the scheduler made (lapses, delistings).
    pub listing_changes: u64,
    pub compute: aiforge_commands::passes::compute::PassReport,
    /// Months the scheduled close closed (`YYYY-MM`, oldest first).
    pub months_closed: Vec<String>,
    /// What the payout pass did.
    pub payouts: aiforge_commands::payouts::PayoutPassReport,
}

// ---- compute ---------------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct LastHeartbeat {
    pub at: String,
    pub metrics: aiforge_commands::compute::NodeMetrics,
}

/// A node's heartbeat metrics over time (`routes::compute::node_heartbeats`).
#[derive(ToSchema)]
pub struct HeartbeatHistory {
    pub node_id: String,
    /// The range asked for (RFC 3339, both included).
    pub from: String,
    pub to: String,
    /// At most one sample per this many seconds (the first heartbeat of each UTC minute).
    pub sample_secs: i64,
    /// How long samples are kept, in seconds (30 days).
    pub keep_secs: i64,
    /// Oldest first.
    pub samples: Vec<LastHeartbeat>,
}

/// A node (`routes::compute::node_json`).
#[derive(ToSchema)]
pub struct NodeBody {
    pub id: String,
    pub owner: String,
    pub name: String,
    pub owner_wallet: String,
    pub resources: Resources,
    /// `online`, `offline` or `deactivated`.
    pub status: Option<String>,
    pub offline_reason: Option<String>,
    /// What this instance last heard from the node (memory only).
    pub last_heartbeat: Option<LastHeartbeat>,
    pub registered_at: Option<String>,
    pub updated_at: Option<String>,
}

#[derive(ToSchema)]
pub struct NodeAnswer {
    pub node: NodeBody,
}

#[derive(ToSchema)]
pub struct NodeRegistered {
    pub node: NodeBody,
    /// The node's token for `Authorization: Bearer`, shown this once; null on a replayed
    /// request.
    pub node_token: Option<String>,
    /// Set when the request was a replay.
    #[schema(nullable = false)]
    pub note: Option<String>,
}

#[derive(ToSchema)]
pub struct NodeHistoryEntry {
    pub event: String,
    pub status: String,
    pub detail: Value,
    pub at: String,
}

#[derive(ToSchema)]
pub struct NodeEarnings {
    /// What the ledger owes the node's owner now (earned, less payouts).
    pub payable: Usdt,
    pub jobs_paid: i64,
    /// Its share of the jobs it ran, all time.
    pub jobs: Usdt,
    /// What monthly closes paid it for the tokens it served (the compute rate of the fee
    /// schedule), all time.
    pub inference: Usdt,
}

/// A node with its state history and earnings (`GET /api/nodes/{node_id}`): every field of
/// [`NodeBody`] plus `history` and `earnings`.
#[derive(ToSchema)]
pub struct NodeDetail {
    #[serde(flatten)]
    pub node: NodeBody,
    pub history: Vec<NodeHistoryEntry>,
    /// Its share of every job it ran and its inference pay, as the ledger holds them.
    pub earnings: NodeEarnings,
}

#[derive(ToSchema)]
pub struct NodeDetailAnswer {
    pub node: NodeDetail,
}

#[derive(ToSchema)]
pub struct Nodes {
    pub nodes: Vec<NodeBody>,
}

#[derive(ToSchema)]
pub struct AdminNodeJobs {
    pub node: NodeBody,
    pub jobs: Vec<JobBody>,
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
}

#[derive(ToSchema)]
pub struct AdminNodes {
    pub nodes: Vec<NodeBody>,
    pub by_status: BTreeMap<String, u64>,
}

pub use aiforge_domain::node_protocol::HeldJob;

pub use aiforge_domain::node_protocol::HeartbeatReply as HeartbeatAnswer;

#[derive(ToSchema)]
pub struct NodeOffline {
    pub node_id: String,
    pub status: String,
    pub jobs_requeued: u64,
}

pub use aiforge_domain::node_protocol::AssignedJob as Assignment;

pub use aiforge_domain::node_protocol::NextJob as AssignmentAnswer;

#[derive(ToSchema)]
pub struct Settlement {
    pub node_net: Usdt,
    pub platform_fee: Option<Usdt>,
    pub refund: Option<Usdt>,
}

/// A job (`routes::compute::job_json`).
#[derive(ToSchema)]
pub struct JobBody {
    pub id: String,
    pub creator: String,
    pub payment_id: String,
    #[schema(rename = "type")]
    pub job_type: String,
    pub spec: JobSpec,
    pub price: Usdt,
    /// `pending`, `assigned`, `running`, `completed`, `failed`, `timed_out` or `cancelled`.
    pub status: String,
    pub node_id: Option<String>,
    pub attempt: i64,
    pub exit_code: Option<i64>,
    pub failure_reason: Option<String>,
    pub message: Option<String>,
    pub outputs: Vec<Output>,
    /// Once the job is settled.
    pub settlement: Option<Settlement>,
    pub submitted_at: String,
    pub assigned_at: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub updated_at: String,
}

#[derive(ToSchema)]
pub struct JobAnswer {
    pub job: JobBody,
}

#[derive(ToSchema)]
pub struct JobHistoryEntry {
    pub event: String,
    pub status: String,
    pub node_id: Option<String>,
    pub attempt: i64,
    pub at: String,
}

/// A job with its history (`GET /api/jobs/{job_id}`): every field of [`JobBody`] plus
/// `history`.
#[derive(ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobBody,
    pub history: Vec<JobHistoryEntry>,
}

#[derive(ToSchema)]
pub struct JobDetailAnswer {
    pub job: JobDetail,
}

#[derive(ToSchema)]
pub struct JobsPage {
    pub jobs: Vec<JobBody>,
    pub page: i64,
    pub per_page: i64,
    pub total: i64,
}

#[derive(ToSchema)]
pub struct JobLogs {
    pub job_id: String,
    pub lines: Vec<aiforge_commands::job_logs::Line>,
    /// Lines dropped because the job printed more than is kept.
    pub dropped: u64,
}

// ---- blobs -----------------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct BlobBody {
    /// CIDv0, what a job's `inputs` name.
    pub cid: String,
    pub sha256: String,
    pub size_bytes: i64,
    pub storage: String,
    pub purpose: String,
    pub job_id: Option<String>,
    pub stored_at: String,
}

#[derive(ToSchema)]
pub struct BlobAnswer {
    pub blob: BlobBody,
}

#[derive(ToSchema)]
pub struct OutputAnswer {
    pub output: Output,
}

/// The multipart form of a model upload: one `file` part and optional text parts (the same
/// names as the query string's).
#[derive(ToSchema)]
pub struct ModelUploadForm {
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    pub name: Option<String>,
    pub description: Option<String>,
    /// Comma-separated.
    pub tags: Option<String>,
    pub group_id: Option<String>,
    /// Default: the file part's own file name, else `model.bin`.
    pub filename: Option<String>,
}

/// Raw bytes (a file, streamed).
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct Binary(pub Vec<u8>);

// ---- payouts ---------------------------------------------------------------------------------

#[derive(ToSchema)]
pub struct PayoutEntry {
    pub payout_id: String,
    /// The ledger account paid: `creator_payable:<user>` or `node_payable:<node>`.
    pub payable: String,
    pub user_id: String,
    pub network: String,
    pub address: String,
    #[schema(value_type = String, example = "12.500000")]
    pub amount: String,
    /// The close that made it (`YYYY-MM`); null for a withdraw.
    pub month: Option<String>,
    /// `awaiting_approval`, `awaiting_payment`, `in_progress`, `completed`, `cancelled`, `failed`.
    pub state: String,
    pub tx_hash: Option<String>,
    pub explorer_url: Option<String>,
    /// Why it waits, was cancelled or failed.
    pub reason: Option<String>,
    pub requested_at: String,
    pub updated_at: String,
}

#[derive(ToSchema)]
pub struct PayoutList {
    pub payouts: Vec<PayoutEntry>,
}

#[derive(ToSchema)]
pub struct PayoutOne {
    pub payout: PayoutEntry,
}

#[derive(ToSchema)]
pub struct HotWallet {
    pub network: String,
    pub address: String,
    pub usdt: Option<String>,
    pub gas: Option<String>,
    pub transfers_gas_pays: Option<u64>,
    /// Why the balances could not be read.
    pub error: Option<String>,
}

#[derive(ToSchema)]
pub struct HotWallets {
    pub hot_wallets: Vec<HotWallet>,
}

#[derive(ToSchema)]
pub struct PayoutReceipt {
    pub month: String,
    /// Hex SHA-256 (README, "Payout receipts").
    pub root: String,
    pub payouts: u64,
    /// When the receipt was published (`PayoutReceiptPublished`), RFC 3339.
    pub published_at: String,
}

#[derive(ToSchema)]
pub struct PayoutProof {
    pub leaf: aiforge_domain::merkle::ReceiptLeaf,
    /// What the leaf hashes: `payee|network:address|amount|month`.
    pub leaf_text: String,
    pub proof: Vec<aiforge_domain::merkle::ProofStep>,
    pub root: String,
}

// ---- fees ------------------------------------------------------------------------------------

/// One version of the fee schedule (`aiforge_domain::fees::FeeSchedule`).
#[derive(ToSchema)]
pub struct FeeScheduleBody {
    pub version: u32,
    /// Payments confirmed at or after this instant are split by this version.
    pub effective_from: String,
    /// The platform's share by payment type, whole percent.
    pub platform_percent: BTreeMap<String, u32>,
    pub publishing_fee: Usdt,
    pub listing_fee: Usdt,
    /// Null until inference nodes earn.
    pub compute_per_1k_tokens: Option<Usdt>,
}

#[derive(ToSchema)]
pub struct FeeRatesBody {
    pub platform_percent: BTreeMap<String, u32>,
    pub publishing_fee: Usdt,
    pub listing_fee: Usdt,
    pub compute_per_1k_tokens: Option<Usdt>,
}

#[derive(ToSchema)]
pub struct FeeProposalBody {
    pub proposal_id: String,
    /// `proposed`, `adopted` or `withdrawn`.
    pub state: String,
    /// The version number, once adopted.
    pub version: Option<u32>,
    pub effective_from: String,
    pub rates: FeeRatesBody,
    pub proposed_by: String,
    pub proposed_at: String,
}

#[derive(ToSchema)]
pub struct FeeProposalAnswer {
    pub proposal: FeeProposalBody,
}

#[derive(ToSchema)]
pub struct FeeBookAnswer {
    /// The platform's clock.
    pub now: String,
    /// The version in force now.
    pub in_force: u32,
    /// Genesis first; each with its version fields and `state`.
    pub versions: Vec<Value>,
    pub proposals: Vec<FeeProposalBody>,
}

#[derive(ToSchema)]
pub struct CurrentFees {
    pub current: FeeScheduleBody,
    pub next: Option<FeeScheduleBody>,
}

/// One side of a what-if.
#[derive(ToSchema)]
pub struct FeesWhatIfSide {
    pub fee_schedule_versions: Vec<u32>,
    pub pool_total: Usdt,
    pub group_api_total: Usdt,
    /// The platform's fees on the month's payments (all types).
    pub platform_fee: Usdt,
    /// By payment type.
    pub platform_fees: BTreeMap<String, Usdt>,
    /// The whole distribution, as a close would record it.
    pub distribution: MonthDistributionBody,
}

#[derive(ToSchema)]
pub struct FeesWhatIfModel {
    pub model_id: String,
    pub tokens: u64,
    pub usage_percent: String,
    pub actual_pool_amount: Usdt,
    pub proposed_pool_amount: Usdt,
    pub actual_group_api_amount: Usdt,
    pub proposed_group_api_amount: Usdt,
}

/// A node's net of the month's job settlements, as paid and under the proposal's job rate.
#[derive(ToSchema)]
pub struct FeesWhatIfNode {
    pub node_id: String,
    pub actual_net: Usdt,
    pub proposed_net: Usdt,
}

#[derive(ToSchema)]
pub struct FeesWhatIfCreator {
    pub user_id: String,
    pub actual_pool: Usdt,
    pub proposed_pool: Usdt,
    pub actual_group_api: Usdt,
    pub proposed_group_api: Usdt,
    /// API subscriptions and sales of their own models, net of the platform's fee.
    pub actual_direct: Usdt,
    pub proposed_direct: Usdt,
    pub actual_total: Usdt,
    pub proposed_total: Usdt,
}

#[derive(ToSchema)]
pub struct FeesWhatIf {
    #[schema(example = "2026-11")]
    pub month: String,
    /// Null when the what-if was of rates given inline.
    pub proposal_id: Option<String>,
    pub schedule: FeeScheduleBody,
    /// Whether the "as paid" side equals the recorded close (it does unless the log changed).
    pub actual_matches_recorded_close: bool,
    pub actual: FeesWhatIfSide,
    pub proposed: FeesWhatIfSide,
    pub models: Vec<FeesWhatIfModel>,
    /// Each node paid by the month's job settlements (its net re-split by the proposal's job
    /// rate as a settlement under it would).
    pub nodes: Vec<FeesWhatIfNode>,
    pub creators: Vec<FeesWhatIfCreator>,
}

/// One bucket of a series: its first day and its value (a count as an integer string, or USDT).
#[derive(ToSchema)]
pub struct SeriesPoint {
    /// The bucket's first day, YYYY-MM-DD.
    pub t: String,
    pub value: String,
}

#[derive(ToSchema)]
pub struct SeriesLine {
    /// `total`, or the breakdown's key (a payment type, an earnings kind, a model, service or
    /// subscription id; `plan` for a plan's calls).
    pub key: String,
    pub label: String,
    pub points: Vec<SeriesPoint>,
}

#[derive(ToSchema)]
pub struct Series {
    pub metric: String,
    /// day | month
    pub bucket: String,
    pub scope: String,
    /// The scope's id (null for the platform).
    pub id: Option<String>,
    pub from: String,
    pub to: String,
    pub group_by: Option<String>,
    /// count | usdt
    pub unit: String,
    pub series: Vec<SeriesLine>,
}

/// `POST /api/admin/audit/verify`: the event log against its seals.
#[derive(ToSchema)]
pub struct AuditVerdict {
    pub intact: bool,
    /// Events checked (when intact).
    pub sealed: Option<i64>,
    /// The first altered event's global position (when not).
    pub position: Option<i64>,
    /// Its place in log order (when not).
    pub seq: Option<i64>,
    /// The verdict in a sentence, as the CLI prints it.
    pub message: String,
}

/// `POST /api/admin/audit/replay/{year}/{month}`: a month recomputed from the raw events.
#[derive(ToSchema)]
pub struct AuditReplay {
    #[schema(example = "2026-11")]
    pub month: String,
    /// Whether the month has a recorded close to compare with.
    pub closed: bool,
    /// Whether the recomputed distribution equals the recorded one, digest included.
    pub matches: bool,
    pub recorded_digest: Option<String>,
    pub computed: MonthDistributionBody,
    /// The top-level fields that differ: `field: recorded … / replayed …`.
    pub differences: Vec<String>,
    /// The verdict in a sentence, as the CLI prints it.
    pub message: String,
}

/// `GET /api/payouts/mine`.
#[derive(ToSchema)]
pub struct MyPayouts {
    pub payouts: Vec<PayoutEntry>,
    /// `AIFORGE_PAYOUT_MINIMUM`: a payable below it waits.
    pub minimum: Usdt,
    /// `AIFORGE_PAYOUT_APPROVAL_THRESHOLD`: a payout above it waits for an admin.
    pub approval_threshold: Usdt,
}

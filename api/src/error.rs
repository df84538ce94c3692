//! The one error shape of the platform API, `{"error":{"code","message"}}` (plus `field` when a
//! request field is at fault), and the one place that maps domain and application errors to
//! HTTP statuses. 5xx bodies are generic; their cause goes to the log.

use aiforge_commands::accounts::SignInError;
use aiforge_commands::wallet_auth::{SignInRejected, WalletSignInError};
use aiforge_commands::CommandError;
use aiforge_domain::account::AccountError;
use aiforge_domain::admin::AdminError;
use aiforge_domain::group::GroupError;
use aiforge_domain::payment::PaymentError;
use aiforge_domain::subscription::SubscriptionError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable and machine-readable: clients branch on this, not on the message.
    pub code: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    pub fn invalid_field(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A failure whose details must not reach the client.
    /// Its whole `source()` chain goes to the log.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let cause = cause.into();
        tracing::error!(error = %aiforge_commands::error_chain(&*cause), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }

    pub fn unavailable(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let cause = cause.into();
        tracing::warn!(error = %aiforge_commands::error_chain(&*cause), "dependency unavailable");
        Self {
            retry_after_secs: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "service temporarily unavailable, retry shortly",
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": bounded(&self.message) });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        let mut response = (self.status, axum::Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::InvalidEmail
            | AccountError::InvalidUsername
            | AccountError::InvalidPassword => {
                let field = err.field().unwrap_or("body");
                ApiError::invalid_field(field, err.to_string())
            }
            AccountError::AlreadyRegistered => {
                ApiError::new(StatusCode::CONFLICT, "already_registered", err.to_string())
            }
            AccountError::NotRegistered => ApiError::not_found(err.to_string()),
            AccountError::WalletAlreadyLinked | AccountError::WalletAlreadyVerified => ApiError {
                field: Some("address"),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "wallet_already_linked",
                    err.to_string(),
                )
            },
            AccountError::WalletNotLinked => ApiError {
                field: Some("address"),
                ..ApiError::new(StatusCode::NOT_FOUND, "wallet_not_linked", err.to_string())
            },
            AccountError::TooManyWallets => ApiError::invalid_field("address", err.to_string()),
            AccountError::InvalidReason => ApiError::invalid_field("reason", err.to_string()),
            AccountError::Deactivated => ApiError::new(
                StatusCode::FORBIDDEN,
                "account_deactivated",
                "this account is deactivated; contact the platform's administrators",
            ),
            AccountError::NotDeactivated => {
                ApiError::new(StatusCode::CONFLICT, "not_deactivated", err.to_string())
            }
            AccountError::AlreadyDeactivated => {
                ApiError::new(StatusCode::CONFLICT, "already_deactivated", err.to_string())
            }
            AccountError::WalletNotVerified => ApiError {
                field: Some("address"),
                ..ApiError::new(
                    StatusCode::CONFLICT,
                    "payout_wallet_unverified",
                    err.to_string(),
                )
            },
        }
    }
}

/// Maps a command failure; `E` maps its own domain errors.
pub fn command_error<E>(err: CommandError<E>) -> ApiError
where
    E: std::error::Error + Into<ApiError>,
{
    match err {
        CommandError::Rejected(e) => e.into(),
        CommandError::Taken { namespace, .. } => ApiError {
            field: Some(match namespace.as_str() {
                "email" => "email",
                "username" => "username",
                "wallet" => "address",
                _ => "body",
            }),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "already_taken",
                format!("this {namespace} is already taken"),
            )
        },
        CommandError::IdempotencyKeyReused => ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request",
        ),
        CommandError::Conflict => ApiError {
            retry_after_secs: Some(1),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "concurrent_modification",
                "the resource was changed concurrently; retry the request",
            )
        },
        CommandError::Unavailable(cause) => ApiError::unavailable(cause),
        CommandError::Internal(cause) => ApiError::internal(cause),
    }
}

impl From<CommandError<AccountError>> for ApiError {
    fn from(err: CommandError<AccountError>) -> Self {
        command_error(err)
    }
}

impl From<SignInError> for ApiError {
    fn from(err: SignInError) -> Self {
        match err {
            SignInError::InvalidCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                err.to_string(),
            ),
            SignInError::Throttled { retry_after_secs } => ApiError {
                retry_after_secs: Some(u64::try_from(retry_after_secs).unwrap_or(1)),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    err.to_string(),
                )
            },
            SignInError::Store(e) => e.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => ApiError::unavailable(err),
            other => ApiError::internal(other),
        }
    }
}

impl From<GroupError> for ApiError {
    fn from(err: GroupError) -> Self {
        let message = err.to_string();
        match err {
            GroupError::InvalidName | GroupError::DescriptionTooLong => {
                ApiError::invalid_field(err.field().unwrap_or("body"), message)
            }
            GroupError::NotFound => ApiError::not_found(message),
            // Non-members learn nothing about a group, not even that it exists.
            GroupError::ActorNotAMember { .. } => ApiError::not_found("no such group"),
            GroupError::NotAMember { .. } => ApiError {
                field: Some("user_id"),
                ..ApiError::new(StatusCode::NOT_FOUND, "not_a_member", message)
            },
            GroupError::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            GroupError::OwnerCannotLeave => {
                ApiError::new(StatusCode::CONFLICT, "owner_cannot_leave", message)
            }
            GroupError::AlreadyAMember { .. } | GroupError::AlreadyTheOwner { .. } => ApiError {
                field: Some("user_id"),
                ..ApiError::new(StatusCode::CONFLICT, "already_a_member", message)
            },
            GroupError::RoleUnchanged { .. } => ApiError {
                field: Some("role"),
                ..ApiError::new(StatusCode::CONFLICT, "role_unchanged", message)
            },
            GroupError::GroupFull => ApiError::new(StatusCode::CONFLICT, "group_full", message),
            GroupError::AlreadyCreated => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", message)
            }
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(err: AdminError) -> Self {
        let message = err.to_string();
        match err {
            AdminError::AlreadyAdmin => {
                ApiError::new(StatusCode::CONFLICT, "already_admin", message)
            }
            AdminError::NotAdmin => ApiError::not_found(message),
            AdminError::LastAdmin => ApiError::new(StatusCode::CONFLICT, "last_admin", message),
            AdminError::NotAuthorized => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
        }
    }
}

impl From<SignInRejected> for ApiError {
    fn from(err: SignInRejected) -> Self {
        let message = err.to_string();
        match err {
            SignInRejected::MalformedAddress(_) => ApiError::invalid_field("address", message),
            SignInRejected::MalformedSignature(_) => ApiError::invalid_field("signature", message),
            SignInRejected::WrongSigner => {
                ApiError::new(StatusCode::UNAUTHORIZED, "signature_rejected", message)
            }
            SignInRejected::Expired => {
                ApiError::new(StatusCode::UNAUTHORIZED, "message_expired", message)
            }
            SignInRejected::NonceUsed => {
                ApiError::new(StatusCode::UNAUTHORIZED, "nonce_used", message)
            }
            SignInRejected::NotIssuedHere
            | SignInRejected::WrongDomain
            | SignInRejected::WrongNetwork
            | SignInRejected::WrongAddress => {
                ApiError::new(StatusCode::UNAUTHORIZED, "message_rejected", message)
            }
        }
    }
}

impl From<WalletSignInError> for ApiError {
    fn from(err: WalletSignInError) -> Self {
        match err {
            WalletSignInError::Rejected(e) => e.into(),
            // A sign-in whose wallet is linked but unproven is "not proven", not "not found".
            WalletSignInError::Command(CommandError::Rejected(AccountError::WalletNotLinked)) => {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "wallet_not_verified",
                    "this wallet is not proven for any account",
                )
            }
            WalletSignInError::Command(e) => e.into(),
        }
    }
}

impl From<PaymentError> for ApiError {
    fn from(err: PaymentError) -> Self {
        let message = err.to_string();
        match err {
            PaymentError::AmountNotPositive
            | PaymentError::WrongAmount { .. }
            | PaymentError::InvalidReference
            | PaymentError::JobReferenceNotUuid => {
                ApiError::invalid_field(err.field().unwrap_or("body"), message)
            }
            PaymentError::NotFound => ApiError::not_found(message),
            PaymentError::AlreadyExists => {
                ApiError::new(StatusCode::CONFLICT, "already_exists", message)
            }
            PaymentError::AlreadyConfirmed { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_confirmed", message)
            }
            PaymentError::TxFailed => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "tx_failed", message)
            }
            PaymentError::NoTransferToPlatform => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_transfer_to_platform",
                message,
            ),
            PaymentError::Underpaid { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "underpaid", message)
            }
            PaymentError::SenderNotPayerWallet { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "sender_not_payer_wallet",
                message,
            ),
            PaymentError::WrongNetwork { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "wrong_network", message)
            }
            PaymentError::Ledger(e) => ApiError::internal(e),
            PaymentError::Fees(e) => ApiError::unavailable(e),
        }
    }
}

impl From<SubscriptionError> for ApiError {
    fn from(err: SubscriptionError) -> Self {
        let message = err.to_string();
        match err {
            SubscriptionError::PaymentAlreadyAwaited { .. } => {
                ApiError::new(StatusCode::CONFLICT, "payment_already_awaited", message)
            }
            SubscriptionError::PaymentRequired => ApiError::invalid_field("plan", message),
            SubscriptionError::UnknownPayment { .. } => ApiError::not_found(message),
            SubscriptionError::NothingToCancel => {
                ApiError::new(StatusCode::CONFLICT, "nothing_to_cancel", message)
            }
            SubscriptionError::AlreadyCancelled { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_cancelled", message)
            }
        }
    }
}

impl From<aiforge_domain::model::ModelError> for ApiError {
    fn from(err: aiforge_domain::model::ModelError) -> Self {
        use aiforge_domain::model::ModelError as E;
        let message = err.to_string();
        match err {
            E::InvalidName
            | E::DescriptionTooLong
            | E::InvalidTag(_)
            | E::TooManyTags
            | E::EmptyFile => ApiError::invalid_field(err.field().unwrap_or("body"), message),
            E::NotFound | E::Deleted => ApiError::not_found(message),
            E::AlreadyExists => ApiError::new(StatusCode::CONFLICT, "already_exists", message),
            E::NotPermitted => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            E::AlreadyPublished => {
                ApiError::new(StatusCode::CONFLICT, "already_published", message)
            }
            E::NotPublished => ApiError::new(StatusCode::CONFLICT, "not_published", message),
            E::PublishingFeeRequired { .. } => ApiError {
                field: Some("payment_id"),
                ..ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "publishing_fee_required",
                    message,
                )
            },
            E::ListingNotEnded | E::GraceNotEnded => {
                ApiError::new(StatusCode::CONFLICT, "not_due", message)
            }
            E::NotAGroupModel => ApiError::new(StatusCode::CONFLICT, "not_a_group_model", message),
            E::InvalidSplit(_) | E::NotAMember(_) => ApiError::invalid_field("shares", message),
            E::SalePriceNotPositive => ApiError::invalid_field("price", message),
            E::NotSeller => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            E::AlreadyPurchased => {
                ApiError::new(StatusCode::CONFLICT, "already_purchased", message)
            }
        }
    }
}

impl From<aiforge_domain::service::ServiceError> for ApiError {
    fn from(err: aiforge_domain::service::ServiceError) -> Self {
        use aiforge_domain::service::ServiceError as E;
        let message = err.to_string();
        match err {
            E::InvalidName
            | E::DescriptionTooLong
            | E::NegativePrice
            | E::FreePayPerRequest
            | E::ZeroLimit => ApiError::invalid_field(err.field().unwrap_or("body"), message),
            E::NotFound => ApiError::not_found(message),
            E::AlreadyExists => ApiError::new(StatusCode::CONFLICT, "already_exists", message),
            E::NotModelManager | E::NotOwner => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            E::ModelNotOnMarketplace => ApiError {
                field: Some("model_id"),
                ..ApiError::new(StatusCode::CONFLICT, "model_not_on_marketplace", message)
            },
            E::NothingToChange => ApiError::invalid_field("body", message),
            E::ModelNotServable { .. } => ApiError {
                field: Some("model_id"),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "model_not_servable",
                    message,
                )
            },
        }
    }
}

impl From<aiforge_domain::api_subscription::ApiSubscriptionError> for ApiError {
    fn from(err: aiforge_domain::api_subscription::ApiSubscriptionError) -> Self {
        use aiforge_domain::api_subscription::ApiSubscriptionError as E;
        let message = err.to_string();
        match err {
            E::CreditRequired | E::CreditNotAccepted => {
                ApiError::invalid_field(err.field().unwrap_or("credit"), message)
            }
            E::NotFound | E::UnknownPayment { .. } => ApiError::not_found(message),
            E::AlreadyExists => ApiError::new(StatusCode::CONFLICT, "already_exists", message),
            E::ServiceNotAccepting => {
                ApiError::new(StatusCode::CONFLICT, "service_not_accepting", message)
            }
            E::PaymentRequired => ApiError::invalid_field("payment", message),
            // A subscription is its subscriber's alone: to anyone else it does not exist.
            E::NotSubscriber => ApiError::not_found("no such subscription"),
            E::Cancelled => ApiError::new(StatusCode::CONFLICT, "cancelled", message),
            E::NothingToRenew => ApiError::new(StatusCode::CONFLICT, "nothing_to_renew", message),
            E::NotActive => ApiError::new(StatusCode::CONFLICT, "not_active", message),
            E::TopUpNotPositive => ApiError::invalid_field("amount", message),
            E::WrongRenewalAmount { .. } => {
                ApiError::new(StatusCode::CONFLICT, "wrong_amount", message)
            }
            E::Money(e) => ApiError::invalid_field("credit", e.to_string()),
        }
    }
}

impl From<aiforge_commands::marketplace::MarketplaceError> for ApiError {
    fn from(err: aiforge_commands::marketplace::MarketplaceError) -> Self {
        use aiforge_commands::marketplace::MarketplaceError as E;
        let message = err.to_string();
        match err {
            E::Model(e) => command_error(e),
            E::Service(e) => command_error(e),
            E::Subscription(e) => command_error(e),
            E::Payments(e) => e.into(),
            E::UnknownGroup => ApiError::invalid_field("group_id", message),
            E::UnknownModel => ApiError::not_found(message),
            E::UnknownService => ApiError::not_found(message),
            E::UnknownPayment => ApiError {
                field: Some("payment_id"),
                ..ApiError::not_found(message)
            },
            E::PaymentNotConfirmed { .. } => ApiError {
                field: Some("payment_id"),
                ..ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "payment_not_confirmed",
                    message,
                )
            },
            E::WrongPaymentType { .. } => ApiError::invalid_field("payment_id", message),
            E::PaymentAlreadyUsed { .. } => ApiError {
                field: Some("payment_id"),
                ..ApiError::new(StatusCode::CONFLICT, "payment_already_used", message)
            },
            E::NotForSale => ApiError::new(StatusCode::CONFLICT, "not_for_sale", message),
            E::AlreadyPurchased => {
                ApiError::new(StatusCode::CONFLICT, "already_purchased", message)
            }
            E::OwnModel => ApiError::new(StatusCode::CONFLICT, "own_model", message),
            E::Internal(cause) => ApiError::internal(cause),
        }
    }
}

impl From<aiforge_commands::blob::BlobError> for ApiError {
    fn from(err: aiforge_commands::blob::BlobError) -> Self {
        use aiforge_commands::blob::BlobError as E;
        let message = err.to_string();
        match err {
            E::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            }
            E::NotFound(_) => ApiError::not_found(message),
            E::BadDigest(_) => ApiError::invalid_field("sha256", message),
            E::BadCid(_) => ApiError::invalid_field("cid", message),
            backend @ E::Backend { .. } => ApiError::unavailable(backend),
            E::Io(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => ApiError::new(
                StatusCode::BAD_REQUEST,
                "upload_interrupted",
                format!("the upload ended before its end: {e}; nothing was kept"),
            ),
            other @ (E::Corrupt { .. } | E::Io(_) | E::CidMismatch { .. } | E::Config(_)) => {
                ApiError::internal(other)
            }
        }
    }
}

impl From<aiforge_commands::blob::import::ImportError> for ApiError {
    fn from(err: aiforge_commands::blob::import::ImportError) -> Self {
        use aiforge_commands::blob::import::ImportError as E;
        let message = err.to_string();
        match err {
            E::BadRepo(_) => ApiError::invalid_field("repo", message),
            E::BadFilename(_) => ApiError::invalid_field("filename", message),
            E::BadRevision(_) => ApiError::invalid_field("revision", message),
            E::NotFound { .. } => ApiError {
                field: Some("filename"),
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_on_hub", message)
            },
            E::Denied { .. } => ApiError {
                field: Some("repo"),
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "hub_denied", message)
            },
            E::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
            }
            // A transport error names the hub's URL (a setting): it goes to the log only.
            E::Transport(e) => {
                tracing::warn!(error = %e, "the hub could not be reached");
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "hub_failed",
                    "the hub could not be reached; retry later",
                )
            }
            E::Http { .. } | E::TooManyRedirects | E::HashMismatch { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "hub_failed", message)
            }
            E::Store(e) => e.into(),
        }
    }
}

impl From<aiforge_domain::revenue_book::RevenueBookError> for ApiError {
    fn from(err: aiforge_domain::revenue_book::RevenueBookError) -> Self {
        use aiforge_domain::revenue_book::RevenueBookError as E;
        let message = err.to_string();
        match err {
            E::MonthNotOver { .. } => ApiError {
                field: Some("month"),
                ..ApiError::new(StatusCode::CONFLICT, "month_not_over", message)
            },
            E::AlreadyClosed { .. } => {
                ApiError::new(StatusCode::CONFLICT, "already_closed", message)
            }
            E::OutOfOrder { .. } => ApiError {
                field: Some("month"),
                ..ApiError::new(StatusCode::CONFLICT, "out_of_order", message)
            },
            E::BeforeTheLog { .. } | E::EmptyLog { .. } => ApiError {
                field: Some("month"),
                ..ApiError::new(StatusCode::CONFLICT, "before_first_event", message)
            },
            E::StaleInputs => ApiError {
                retry_after_secs: Some(1),
                ..ApiError::new(StatusCode::CONFLICT, "concurrent_modification", message)
            },
            // A distribution that does not balance or overflows is a bug, never the client's.
            other @ (E::Revenue(_) | E::Ledger(_)) => ApiError::internal(other),
        }
    }
}

impl From<aiforge_commands::StoreError> for ApiError {
    fn from(err: aiforge_commands::StoreError) -> Self {
        ApiError::unavailable(err)
    }
}

impl From<aiforge_domain::node::NodeError> for ApiError {
    fn from(err: aiforge_domain::node::NodeError) -> Self {
        use aiforge_domain::node::NodeError as E;
        let message = err.to_string();
        match err {
            E::InvalidName
            | E::InvalidOwnerWallet
            | E::OutOfRange(_)
            | E::TooManyGpus
            | E::InvalidGpuModel => ApiError::invalid_field(err.field().unwrap_or("body"), message),
            // The digest is made by the platform, never by the caller.
            E::InvalidTokenDigest => ApiError::internal(message),
            E::NotFound => ApiError::not_found(message),
            E::AlreadyRegistered => ApiError::new(StatusCode::CONFLICT, "already_exists", message),
            E::Deactivated => ApiError::new(StatusCode::FORBIDDEN, "node_deactivated", message),
        }
    }
}

impl From<aiforge_domain::job::JobError> for ApiError {
    fn from(err: aiforge_domain::job::JobError) -> Self {
        use aiforge_domain::job::JobError as E;
        let message = err.to_string();
        match err {
            E::InvalidImage
            | E::TooManyArgs
            | E::InvalidArg
            | E::TooManyEnvVars
            | E::InvalidEnvKey(_)
            | E::ReservedEnvKey(_)
            | E::InvalidEnvValue(_)
            | E::TooManyInputs
            | E::InvalidInput(_)
            | E::DuplicateInput(_)
            | E::OutOfRange(_)
            | E::GpuMemoryWithoutGpus
            | E::PriceNotPositive
            | E::TooManyOutputs
            | E::InvalidOutput(_)
            | E::DuplicateOutput(_) => {
                ApiError::invalid_field(err.field().unwrap_or("body"), message)
            }
            E::EscrowMismatch { .. } => ApiError {
                field: Some("price"),
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "escrow_mismatch", message)
            },
            E::NotFound => ApiError::not_found(message),
            // Only the creator sees a job at all.
            E::NotCreator => ApiError::not_found("no such job"),
            E::AlreadyExists => ApiError::new(StatusCode::CONFLICT, "already_exists", message),
            E::NotPending { .. } | E::NotRunning { .. } => {
                ApiError::new(StatusCode::CONFLICT, "invalid_job_state", message)
            }
            E::AlreadyEnded { .. } => ApiError::new(StatusCode::CONFLICT, "already_ended", message),
            E::StaleReport { .. } => ApiError::new(StatusCode::CONFLICT, "stale_report", message),
            E::TimeoutTooEarly { .. } => {
                ApiError::new(StatusCode::CONFLICT, "timeout_too_early", message)
            }
            E::Ledger(e) => ApiError::internal(e),
            E::Fees(e) => ApiError::unavailable(e),
        }
    }
}

impl From<aiforge_domain::blob::BlobError> for ApiError {
    fn from(err: aiforge_domain::blob::BlobError) -> Self {
        ApiError::internal(err.to_string())
    }
}

impl From<aiforge_commands::compute::ComputeError> for ApiError {
    fn from(err: aiforge_commands::compute::ComputeError) -> Self {
        use aiforge_commands::compute::ComputeError as E;
        let message = err.to_string();
        match err {
            E::Node(e) => command_error(e),
            E::Job(e) => command_error(e),
            E::Blob(e) => command_error(e),
            E::BadNodeToken => ApiError::new(StatusCode::UNAUTHORIZED, "bad_node_token", message),
            E::WrongNode => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            E::OwnerDeactivated => {
                ApiError::new(StatusCode::FORBIDDEN, "account_deactivated", message)
            }
            E::UnknownNode => ApiError::not_found(message),
            E::UnknownJob => ApiError::not_found(message),
            E::UnknownPayment => ApiError {
                field: Some("payment_id"),
                ..ApiError::not_found(message)
            },
            E::WrongPaymentType { .. } | E::JobReferenceNotUuid { .. } => {
                ApiError::invalid_field("payment_id", message)
            }
            E::PaymentNotConfirmed { .. } => ApiError {
                field: Some("payment_id"),
                ..ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    "payment_not_confirmed",
                    message,
                )
            },
            E::InvalidMetrics(e) => ApiError::invalid_field(e.field, message),
            E::InputNotYours { .. } => ApiError::invalid_field("inputs", message),
            E::OutputNotStored { .. } => ApiError::invalid_field("outputs", message),
            E::Internal(cause) => ApiError::internal(cause),
        }
    }
}

/// The most characters of a client's input an error message repeats.
pub const ECHO_CHARS_MAX: usize = 80;

/// `text` as an error message may repeat it: at most `ECHO_CHARS_MAX` characters (then `…`),
/// so an answer never carries back a large input.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(ECHO_CHARS_MAX) {
        None => text.to_string(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// The longest error message answered: whatever a message quotes of the request, the answer
/// stays small.
pub const MESSAGE_CHARS_MAX: usize = 400;

/// `message` cut to `MESSAGE_CHARS_MAX` characters (then `…`).
pub fn bounded(message: &str) -> String {
    match message.char_indices().nth(MESSAGE_CHARS_MAX) {
        None => message.to_string(),
        Some((end, _)) => format!("{}…", &message[..end]),
    }
}

/// A deserializer's message as a client may read it: Rust's type names in words (`u32` is "a
/// non-negative integer", `struct RegisterRequest` "an object"), and what it quotes of the
/// input cut to `ECHO_CHARS_MAX`.
pub fn public_message(message: &str) -> String {
    let mut out = Vec::new();
    let mut words = message.split(' ').peekable();
    while let Some(word) = words.next() {
        let (core, tail) = split_punctuation(word);
        let plain = match core {
            "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => Some("a non-negative integer"),
            "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => Some("an integer"),
            "f32" | "f64" => Some("a number"),
            "struct" | "enum" | "tagged" => {
                // `struct Name`, `enum Name`, `internally tagged enum Name`: the name goes.
                if core != "tagged" {
                    let name = words.next().unwrap_or_default();
                    let (_, tail) = split_punctuation(name);
                    out.push(format!(
                        "{}{tail}",
                        if core == "struct" {
                            "an object"
                        } else {
                            "one of the documented values"
                        }
                    ));
                } else {
                    out.pop();
                    let _ = words.next();
                    let name = words.next().unwrap_or_default();
                    let (_, tail) = split_punctuation(name);
                    out.push(format!("an object with a known \"type\"{tail}"));
                }
                continue;
            }
            _ => None,
        };
        match plain {
            Some(plain) => out.push(format!("{plain}{tail}")),
            None => out.push(word.to_string()),
        }
    }
    excerpt_quotes(&out.join(" "))
}

fn split_punctuation(word: &str) -> (&str, &str) {
    let end = word.trim_end_matches([',', '.', ';', ':']).len();
    word.split_at(end)
}

/// Cuts every quoted part (between backticks or double quotes) to `ECHO_CHARS_MAX`, then the
/// whole message to a few times that.
fn excerpt_quotes(message: &str) -> String {
    let mut out = String::new();
    let mut quoted = String::new();
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push_str(&excerpt(&quoted));
                out.push(c);
                quoted.clear();
                quote = None;
            }
            Some(_) => quoted.push(c),
            None => {
                out.push(c);
                if c == '`' || c == '"' {
                    quote = Some(c);
                }
            }
        }
    }
    out.push_str(&excerpt(&quoted));
    match out.char_indices().nth(ECHO_CHARS_MAX * 4) {
        None => out,
        Some((end, _)) => format!("{}…", &out[..end]),
    }
}

impl From<aiforge_domain::payout::PayoutError> for ApiError {
    fn from(err: aiforge_domain::payout::PayoutError) -> Self {
        use aiforge_domain::payout::PayoutError;
        match err {
            PayoutError::NotFound => ApiError::not_found(err.to_string()),
            PayoutError::AlreadyRequested
            | PayoutError::WrongState { .. }
            | PayoutError::AlreadySigned
            | PayoutError::NonceMismatch { .. }
            | PayoutError::UnknownTransaction { .. }
            | PayoutError::WrongNetwork { .. } => {
                ApiError::new(StatusCode::CONFLICT, "payout_state", err.to_string())
            }
            PayoutError::BelowMinimum { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "below_payout_minimum",
                err.to_string(),
            ),
        }
    }
}

impl From<aiforge_commands::payouts::WithdrawError> for ApiError {
    fn from(err: aiforge_commands::payouts::WithdrawError) -> Self {
        use aiforge_commands::payouts::WithdrawError;
        match err {
            WithdrawError::BelowMinimum { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "below_payout_minimum",
                err.to_string(),
            ),
            WithdrawError::NoPayoutWallet { .. } => {
                ApiError::new(StatusCode::CONFLICT, "no_payout_wallet", err.to_string())
            }
            WithdrawError::NotConfigured => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payouts_not_configured",
                err.to_string(),
            ),
            WithdrawError::Command(e) => command_error(e),
            WithdrawError::Views(_) | WithdrawError::Account(_) => ApiError::internal(err),
        }
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;

    #[test]
    fn messages_name_no_rust_type_and_echo_no_large_input() {
        let big = "x".repeat(1_000_000);
        let message = format!("invalid type: string \"{big}\", expected u32 at line 1 column 9");
        let public = public_message(&message);
        assert!(public.len() < 400, "{}", public.len());
        assert!(
            public.contains("expected a non-negative integer"),
            "{public}"
        );
        let public = public_message("invalid type: integer `1`, expected struct RegisterRequest");
        assert_eq!(public, "invalid type: integer `1`, expected an object");
        let public = public_message("invalid type: map, expected internally tagged enum Pricing");
        assert_eq!(
            public,
            "invalid type: map, expected an object with a known \"type\""
        );
        assert_eq!(excerpt("short"), "short");
        assert_eq!(
            excerpt(&"é".repeat(100)).chars().count(),
            ECHO_CHARS_MAX + 1
        );
    }
}

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
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    }

    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
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
        let mut error = json!({ "code": self.code, "message": self.message });
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
            | PaymentError::InvalidReference => {
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

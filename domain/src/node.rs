//! The `Node` aggregate: a compute provider's machine, what it offers and whether it may take
//! jobs now.
//!
//! ```text
//! registered (offline) ──MarkOnline──▶ online ──MarkOffline (heartbeat timeout | shutdown)──▶ offline
//!        any state ──Deactivate (admin)──▶ deactivated ──Activate (admin)──▶ offline
//! ```
//!
//! Rules, all here:
//! - Only changes of state are events. Heartbeats are not: the application layer keeps the last
//!   heartbeat outside the log and sends `MarkOffline { reason: HeartbeatTimeout }` when none
//!   came for [`HEARTBEAT_TIMEOUT_SECS`]. A command that asks for the state the node is already
//!   in (online again, offline again, deactivated again, activated while active) succeeds and
//!   writes nothing, so the heartbeat monitor and retried requests may repeat themselves.
//! - A deactivated node cannot come online until an admin activates it; activation leaves it
//!   offline, and its next heartbeat brings it online.
//! - The node authenticates with a token the caller generated; only its SHA-256 (hex) is ever in
//!   an event.
//! - Jobs on a node that goes offline or is deactivated are requeued by the application layer
//!   (`JobCommand::Requeue`), which reads `NodeWentOffline` and `NodeDeactivated`.

use std::ops::RangeInclusive;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{within, OutOfRange};

pub const NAME_CHARS_MAX: usize = 100;
pub const OWNER_WALLET_CHARS_MAX: usize = 128;
pub const GPU_MODEL_CHARS_MAX: usize = 100;
pub const CPU_CORES: RangeInclusive<u64> = 1..=1024;
/// 64 MiB to 64 TiB.
pub const MEMORY_MB: RangeInclusive<u64> = 64..=64 * 1024 * 1024;
/// Up to 1 PB.
pub const DISK_GB: RangeInclusive<u64> = 1..=1_000_000;
pub const GPUS_MAX: usize = 64;
/// Per GPU: 256 MiB to 1 TiB.
pub const GPU_MEMORY_MB: RangeInclusive<u64> = 256..=1024 * 1024;
pub const MAX_CONCURRENT_JOBS: RangeInclusive<u64> = 1..=256;
/// Without a heartbeat for this long, a node is marked offline (the default of the coordinator's
/// `AIFORGE_NODE_HEARTBEAT_TIMEOUT_SECS`).
pub const HEARTBEAT_TIMEOUT_SECS: i64 = 300;

/// Heartbeats over NATS are requests on `<prefix>.<node id>`, answered by a coordinator as the
/// HTTP heartbeat is; the payload is `{"node_id", "token": <node token>, "metrics": {...}}`.
pub const HEARTBEAT_SUBJECT_PREFIX: &str = "aiforge.nodes.heartbeat";

/// A node id as one NATS subject token: characters NATS reads as syntax become `_`.
pub fn subject_token(node_id: &str) -> String {
    node_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The subject a node heartbeats on.
pub fn heartbeat_subject(node_id: &str) -> String {
    format!("{HEARTBEAT_SUBJECT_PREFIX}.{}", subject_token(node_id))
}

/// Whether a node whose last heartbeat was at `last` counts as lost at `now`, with a timeout of
/// `timeout_secs`.
pub fn heartbeat_expired(last: OffsetDateTime, now: OffsetDateTime, timeout_secs: i64) -> bool {
    (now - last).whole_seconds() >= timeout_secs
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Gpu {
    pub model: String,
    pub memory_mb: u64,
}

/// What a node offers to jobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resources {
    pub cpu_cores: u32,
    pub memory_mb: u64,
    pub disk_gb: u64,
    pub gpus: Vec<Gpu>,
    pub max_concurrent_jobs: u32,
}

impl Resources {
    /// Checks every bound; GPU model names are trimmed.
    pub fn validated(self) -> Result<Self, NodeError> {
        within("cpu_cores", self.cpu_cores, &CPU_CORES)?;
        within("memory_mb", self.memory_mb, &MEMORY_MB)?;
        within("disk_gb", self.disk_gb, &DISK_GB)?;
        within(
            "max_concurrent_jobs",
            self.max_concurrent_jobs,
            &MAX_CONCURRENT_JOBS,
        )?;
        if self.gpus.len() > GPUS_MAX {
            return Err(NodeError::TooManyGpus);
        }
        let gpus = self
            .gpus
            .into_iter()
            .map(|gpu| {
                within("gpus.memory_mb", gpu.memory_mb, &GPU_MEMORY_MB)?;
                let model = crate::trimmed_within(&gpu.model, 1..=GPU_MODEL_CHARS_MAX)
                    .ok_or(NodeError::InvalidGpuModel)?;
                Ok(Gpu {
                    model,
                    memory_mb: gpu.memory_mb,
                })
            })
            .collect::<Result<_, NodeError>>()?;
        Ok(Self { gpus, ..self })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineReason {
    HeartbeatTimeout,
    Shutdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    Online,
    Offline,
    Deactivated,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
            NodeStatus::Deactivated => "deactivated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("no such node")]
    NotFound,
    #[error("the node is already registered")]
    AlreadyRegistered,
    #[error("the name must be 1 to {NAME_CHARS_MAX} characters, without control or bidirectional-override characters")]
    InvalidName,
    #[error("the owner wallet must be an Ethereum (0x + 40 hex digits) or Tron (T…, base58check) address")]
    InvalidOwnerWallet,
    #[error("the token digest must be a SHA-256 in lower-case hex")]
    InvalidTokenDigest,
    #[error(transparent)]
    OutOfRange(#[from] OutOfRange),
    #[error("a node has at most {GPUS_MAX} GPUs")]
    TooManyGpus,
    #[error("a GPU model must be 1 to {GPU_MODEL_CHARS_MAX} characters")]
    InvalidGpuModel,
    #[error("the node is deactivated; an admin must activate it first")]
    Deactivated,
}

impl NodeError {
    pub fn field(&self) -> Option<&'static str> {
        match self {
            NodeError::InvalidName => Some("name"),
            NodeError::InvalidOwnerWallet => Some("owner_wallet"),
            NodeError::InvalidTokenDigest => Some("token_digest"),
            NodeError::OutOfRange(e) => Some(e.field),
            NodeError::TooManyGpus | NodeError::InvalidGpuModel => Some("gpus"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeCommand {
    Register {
        node_id: String,
        owner: String,
        name: String,
        owner_wallet: String,
        resources: Resources,
        /// SHA-256 (hex) of the node's token, made by the caller with the token.
        token_digest: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    MarkOnline {
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    MarkOffline {
        reason: OfflineReason,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// `by_admin`: the admin's user id (the application layer checks the role).
    Deactivate {
        by_admin: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    Activate {
        by_admin: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeEvent {
    NodeRegistered {
        node_id: String,
        owner: String,
        name: String,
        owner_wallet: String,
        resources: Resources,
        token_digest: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    NodeCameOnline {
        node_id: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    NodeWentOffline {
        node_id: String,
        reason: OfflineReason,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Also takes an online node offline.
    NodeDeactivated {
        node_id: String,
        by_admin: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    NodeActivated {
        node_id: String,
        by_admin: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl DomainEvent for NodeEvent {
    fn event_type(&self) -> String {
        match self {
            NodeEvent::NodeRegistered { .. } => "NodeRegistered",
            NodeEvent::NodeCameOnline { .. } => "NodeCameOnline",
            NodeEvent::NodeWentOffline { .. } => "NodeWentOffline",
            NodeEvent::NodeDeactivated { .. } => "NodeDeactivated",
            NodeEvent::NodeActivated { .. } => "NodeActivated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: Option<String>,
    pub owner: Option<String>,
    pub resources: Option<Resources>,
    pub token_digest: Option<String>,
    pub status: Option<NodeStatus>,
    /// Facts a command's answer shows (read from the store, not from a view that may lag).
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub owner_wallet: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub registered_at: Option<OffsetDateTime>,
}

pub struct NodeServices;

impl Node {
    pub fn status(&self) -> Option<NodeStatus> {
        self.status
    }

    fn registered(&self) -> Result<(String, NodeStatus), NodeError> {
        match (&self.id, self.status) {
            (Some(id), Some(status)) => Ok((id.clone(), status)),
            _ => Err(NodeError::NotFound),
        }
    }
}

impl Aggregate for Node {
    const TYPE: &'static str = "node";
    type Command = NodeCommand;
    type Event = NodeEvent;
    type Error = NodeError;
    type Services = NodeServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            NodeCommand::Register {
                node_id,
                owner,
                name,
                owner_wallet,
                resources,
                token_digest,
                at,
            } => {
                if self.id.is_some() {
                    return Err(NodeError::AlreadyRegistered);
                }
                let name = crate::trimmed_within(&name, 1..=NAME_CHARS_MAX)
                    .ok_or(NodeError::InvalidName)?;
                let owner_wallet = owner_wallet.trim().to_string();
                if owner_wallet.is_empty()
                    || owner_wallet.len() > OWNER_WALLET_CHARS_MAX
                    || !owner_wallet.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(NodeError::InvalidOwnerWallet);
                }
                if !crate::is_sha256_hex(&token_digest) {
                    return Err(NodeError::InvalidTokenDigest);
                }
                NodeEvent::NodeRegistered {
                    node_id,
                    owner,
                    name,
                    owner_wallet,
                    resources: resources.validated()?,
                    token_digest,
                    at,
                }
            }
            NodeCommand::MarkOnline { at } => match self.registered()? {
                (_, NodeStatus::Deactivated) => return Err(NodeError::Deactivated),
                (_, NodeStatus::Online) => return Ok(()),
                (node_id, NodeStatus::Offline) => NodeEvent::NodeCameOnline { node_id, at },
            },
            NodeCommand::MarkOffline { reason, at } => match self.registered()? {
                (node_id, NodeStatus::Online) => NodeEvent::NodeWentOffline {
                    node_id,
                    reason,
                    at,
                },
                // Offline already (deactivation takes a node offline too).
                (_, NodeStatus::Offline | NodeStatus::Deactivated) => return Ok(()),
            },
            NodeCommand::Deactivate { by_admin, at } => match self.registered()? {
                (_, NodeStatus::Deactivated) => return Ok(()),
                (node_id, _) => NodeEvent::NodeDeactivated {
                    node_id,
                    by_admin,
                    at,
                },
            },
            NodeCommand::Activate { by_admin, at } => match self.registered()? {
                (node_id, NodeStatus::Deactivated) => NodeEvent::NodeActivated {
                    node_id,
                    by_admin,
                    at,
                },
                (_, NodeStatus::Online | NodeStatus::Offline) => return Ok(()),
            },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            NodeEvent::NodeRegistered {
                node_id,
                owner,
                resources,
                token_digest,
                name,
                owner_wallet,
                at,
            } => {
                self.name = name;
                self.owner_wallet = owner_wallet;
                self.registered_at = Some(at);
                self.id = Some(node_id);
                self.owner = Some(owner);
                self.resources = Some(resources);
                self.token_digest = Some(token_digest);
                self.status = Some(NodeStatus::Offline);
            }
            NodeEvent::NodeCameOnline { .. } => self.status = Some(NodeStatus::Online),
            NodeEvent::NodeWentOffline { .. } | NodeEvent::NodeActivated { .. } => {
                self.status = Some(NodeStatus::Offline)
            }
            NodeEvent::NodeDeactivated { .. } => self.status = Some(NodeStatus::Deactivated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use time::macros::datetime;

    type NodeTest = TestFramework<Node>;
    const AT: OffsetDateTime = datetime!(2026-11-21 10:00 UTC);

    fn resources() -> Resources {
        Resources {
            cpu_cores: 8,
            memory_mb: 32_768,
            disk_gb: 500,
            gpus: vec![Gpu {
                model: "RTX 4090".into(),
                memory_mb: 24_576,
            }],
            max_concurrent_jobs: 4,
        }
    }

    fn register(resources: Resources) -> NodeCommand {
        NodeCommand::Register {
            node_id: "n1".into(),
            owner: "u1".into(),
            name: "  rig one ".into(),
            owner_wallet: "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1".into(),
            resources,
            token_digest: "ab".repeat(32),
            at: AT,
        }
    }

    fn registered() -> NodeEvent {
        NodeEvent::NodeRegistered {
            node_id: "n1".into(),
            owner: "u1".into(),
            name: "rig one".into(),
            owner_wallet: "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1".into(),
            resources: resources(),
            token_digest: "ab".repeat(32),
            at: AT,
        }
    }

    fn online() -> NodeEvent {
        NodeEvent::NodeCameOnline {
            node_id: "n1".into(),
            at: AT,
        }
    }

    fn deactivated() -> NodeEvent {
        NodeEvent::NodeDeactivated {
            node_id: "n1".into(),
            by_admin: "admin".into(),
            at: AT,
        }
    }

    fn state_after(events: Vec<NodeEvent>) -> Option<NodeStatus> {
        let mut node = Node::default();
        events.into_iter().for_each(|e| node.apply(e));
        node.status()
    }

    #[test]
    fn registering_records_the_trimmed_name_and_the_node_starts_offline() {
        NodeTest::with(NodeServices)
            .given_no_previous_events()
            .when(register(resources()))
            .then_expect_events(vec![registered()]);
        assert_eq!(state_after(vec![registered()]), Some(NodeStatus::Offline));
    }

    #[test]
    fn registering_twice_is_rejected() {
        NodeTest::with(NodeServices)
            .given(vec![registered()])
            .when(register(resources()))
            .then_expect_error(NodeError::AlreadyRegistered);
    }

    #[test]
    fn resources_outside_their_bounds_are_rejected_with_the_field_named() {
        let cases = [
            (
                Resources {
                    cpu_cores: 0,
                    ..resources()
                },
                "cpu_cores",
            ),
            (
                Resources {
                    max_concurrent_jobs: 257,
                    ..resources()
                },
                "max_concurrent_jobs",
            ),
            (
                Resources {
                    memory_mb: 1,
                    ..resources()
                },
                "memory_mb",
            ),
            (
                Resources {
                    gpus: vec![Gpu {
                        model: "tiny".into(),
                        memory_mb: 1,
                    }],
                    ..resources()
                },
                "gpus.memory_mb",
            ),
        ];
        for (resources, field) in cases {
            let error = resources.validated().unwrap_err();
            assert_eq!(error.field(), Some(field), "{error}");
        }
        let too_many = Resources {
            gpus: vec![resources().gpus[0].clone(); GPUS_MAX + 1],
            ..resources()
        };
        assert_eq!(too_many.validated(), Err(NodeError::TooManyGpus));
        let unnamed = Resources {
            gpus: vec![Gpu {
                model: "  ".into(),
                memory_mb: 8192,
            }],
            ..resources()
        };
        NodeTest::with(NodeServices)
            .given_no_previous_events()
            .when(register(unnamed))
            .then_expect_error(NodeError::InvalidGpuModel);
    }

    #[test]
    fn a_bad_name_wallet_or_token_digest_is_rejected() {
        let mut cases = Vec::new();
        for (name, wallet, digest, error) in [
            ("", "0xabc", "ab".repeat(32), NodeError::InvalidName),
            (
                "rig",
                "0x a",
                "ab".repeat(32),
                NodeError::InvalidOwnerWallet,
            ),
            (
                "rig",
                "0xabc",
                "AB".repeat(32),
                NodeError::InvalidTokenDigest,
            ),
            (
                "rig",
                "0xabc",
                "ab".repeat(31),
                NodeError::InvalidTokenDigest,
            ),
        ] {
            cases.push((
                NodeCommand::Register {
                    node_id: "n1".into(),
                    owner: "u1".into(),
                    name: name.into(),
                    owner_wallet: wallet.into(),
                    resources: resources(),
                    token_digest: digest,
                    at: AT,
                },
                error,
            ));
        }
        for (command, error) in cases {
            NodeTest::with(NodeServices)
                .given_no_previous_events()
                .when(command)
                .then_expect_error(error);
        }
    }

    #[test]
    fn an_offline_node_comes_online_and_an_online_one_writes_nothing() {
        NodeTest::with(NodeServices)
            .given(vec![registered()])
            .when(NodeCommand::MarkOnline { at: AT })
            .then_expect_events(vec![online()]);
        NodeTest::with(NodeServices)
            .given(vec![registered(), online()])
            .when(NodeCommand::MarkOnline { at: AT })
            .then_expect_events(vec![]);
        assert_eq!(
            state_after(vec![registered(), online()]),
            Some(NodeStatus::Online)
        );
    }

    #[test]
    fn an_online_node_goes_offline_with_its_reason_and_an_offline_one_writes_nothing() {
        NodeTest::with(NodeServices)
            .given(vec![registered(), online()])
            .when(NodeCommand::MarkOffline {
                reason: OfflineReason::HeartbeatTimeout,
                at: AT,
            })
            .then_expect_events(vec![NodeEvent::NodeWentOffline {
                node_id: "n1".into(),
                reason: OfflineReason::HeartbeatTimeout,
                at: AT,
            }]);
        NodeTest::with(NodeServices)
            .given(vec![registered()])
            .when(NodeCommand::MarkOffline {
                reason: OfflineReason::Shutdown,
                at: AT,
            })
            .then_expect_events(vec![]);
        NodeTest::with(NodeServices)
            .given(vec![registered(), online(), deactivated()])
            .when(NodeCommand::MarkOffline {
                reason: OfflineReason::HeartbeatTimeout,
                at: AT,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_deactivated_node_cannot_come_online_until_activated() {
        NodeTest::with(NodeServices)
            .given(vec![registered(), online()])
            .when(NodeCommand::Deactivate {
                by_admin: "admin".into(),
                at: AT,
            })
            .then_expect_events(vec![deactivated()]);
        NodeTest::with(NodeServices)
            .given(vec![registered(), online(), deactivated()])
            .when(NodeCommand::MarkOnline { at: AT })
            .then_expect_error(NodeError::Deactivated);
        let activated = NodeEvent::NodeActivated {
            node_id: "n1".into(),
            by_admin: "admin".into(),
            at: AT,
        };
        NodeTest::with(NodeServices)
            .given(vec![registered(), deactivated()])
            .when(NodeCommand::Activate {
                by_admin: "admin".into(),
                at: AT,
            })
            .then_expect_events(vec![activated.clone()]);
        assert_eq!(
            state_after(vec![
                registered(),
                online(),
                deactivated(),
                activated.clone()
            ]),
            Some(NodeStatus::Offline)
        );
        NodeTest::with(NodeServices)
            .given(vec![registered(), deactivated(), activated])
            .when(NodeCommand::MarkOnline { at: AT })
            .then_expect_events(vec![online()]);
    }

    #[test]
    fn deactivating_twice_or_activating_an_active_node_writes_nothing() {
        NodeTest::with(NodeServices)
            .given(vec![registered(), deactivated()])
            .when(NodeCommand::Deactivate {
                by_admin: "admin".into(),
                at: AT,
            })
            .then_expect_events(vec![]);
        NodeTest::with(NodeServices)
            .given(vec![registered(), online()])
            .when(NodeCommand::Activate {
                by_admin: "admin".into(),
                at: AT,
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn commands_to_an_unregistered_node_are_rejected() {
        NodeTest::with(NodeServices)
            .given_no_previous_events()
            .when(NodeCommand::MarkOnline { at: AT })
            .then_expect_error(NodeError::NotFound);
        NodeTest::with(NodeServices)
            .given_no_previous_events()
            .when(NodeCommand::Deactivate {
                by_admin: "admin".into(),
                at: AT,
            })
            .then_expect_error(NodeError::NotFound);
    }

    #[test]
    fn a_heartbeat_expires_after_the_timeout() {
        let last = AT;
        assert!(!heartbeat_expired(
            last,
            last + time::Duration::seconds(HEARTBEAT_TIMEOUT_SECS - 1),
            HEARTBEAT_TIMEOUT_SECS
        ));
        assert!(heartbeat_expired(
            last,
            last + time::Duration::seconds(HEARTBEAT_TIMEOUT_SECS),
            HEARTBEAT_TIMEOUT_SECS
        ));
    }
}

//! The `Blob` aggregate: a file in the blob store that jobs read or wrote, one per content
//! (aggregate id = its SHA-256). Model files are recorded by their model's events; this records
//! the rest, so that a job's input can be named by its CID and resolved to the bytes it stands
//! for, and a node's reported output can be checked against what the store really holds.
//!
//! Rules, all here:
//! - Content addressing makes a store idempotent: the first `Store` of a content records
//!   `BlobStored`; storing the same content again writes nothing when the same user (or the same
//!   job) already holds it, and `BlobHeld` when a new one does: the bytes are one, but each
//!   uploader proved they have them, and only they (and the creators of the jobs that wrote
//!   them) may name them (`Blob::usable_by`).
//! - A CID and a SHA-256 are of one content: the store computed both from the same bytes, and a
//!   command whose digests are not well-formed is refused.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::job::is_cid_v0;

/// Why a blob was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BlobPurpose {
    /// Uploaded by a user, to be a job's input.
    JobInput,
    /// Written by a job on a node.
    JobOutput { job_id: String, attempt: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobCommand {
    Store {
        sha256: String,
        cid: String,
        size_bytes: u64,
        /// The backend it is in (`local`, `s3`, `ipfs`).
        backend: String,
        /// A user id, or `node:<id>`.
        by: String,
        purpose: BlobPurpose,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobEvent {
    BlobStored {
        sha256: String,
        cid: String,
        size_bytes: u64,
        backend: String,
        by: String,
        purpose: BlobPurpose,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Content already stored was stored again by another uploader, or written by another job.
    BlobHeld {
        sha256: String,
        by: String,
        purpose: BlobPurpose,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl DomainEvent for BlobEvent {
    fn event_type(&self) -> String {
        match self {
            BlobEvent::BlobStored { .. } => "BlobStored".to_string(),
            BlobEvent::BlobHeld { .. } => "BlobHeld".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1.0".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("{0:?} is not a SHA-256 (64 lowercase hex digits)")]
    InvalidSha256(String),
    #[error("{0:?} is not a CIDv0")]
    InvalidCid(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    pub stored: bool,
    pub sha256: String,
    pub cid: String,
    pub size_bytes: u64,
    /// The users who uploaded this content as a job input.
    pub uploaders: std::collections::BTreeSet<String>,
    /// The jobs that wrote this content as an output.
    pub jobs: std::collections::BTreeSet<String>,
}

impl Blob {
    /// Whether `purpose` by `by` is already recorded.
    fn holds(&self, by: &str, purpose: &BlobPurpose) -> bool {
        match purpose {
            BlobPurpose::JobInput => self.uploaders.contains(by),
            BlobPurpose::JobOutput { job_id, .. } => self.jobs.contains(job_id),
        }
    }

    fn hold(&mut self, by: String, purpose: BlobPurpose) {
        match purpose {
            BlobPurpose::JobInput => {
                self.uploaders.insert(by);
            }
            BlobPurpose::JobOutput { job_id, .. } => {
                self.jobs.insert(job_id);
            }
        }
    }

    /// Whether `user` may name this content (as a job's input, or to download it): they
    /// uploaded it, or one of `their_jobs` wrote it. Whether anyone else did is not theirs to
    /// learn.
    pub fn usable_by(&self, user: &str, their_jobs: impl Fn(&str) -> bool) -> bool {
        self.stored && (self.uploaders.contains(user) || self.jobs.iter().any(|j| their_jobs(j)))
    }
}

pub struct BlobServices;

impl Aggregate for Blob {
    const TYPE: &'static str = "blob";
    type Command = BlobCommand;
    type Event = BlobEvent;
    type Error = BlobError;
    type Services = BlobServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let BlobCommand::Store {
            sha256,
            cid,
            size_bytes,
            backend,
            by,
            purpose,
            at,
        } = command;
        if !crate::is_sha256_hex(&sha256) {
            return Err(BlobError::InvalidSha256(sha256));
        }
        if !is_cid_v0(&cid) {
            return Err(BlobError::InvalidCid(cid));
        }
        if self.stored {
            if !self.holds(&by, &purpose) {
                sink.write(
                    BlobEvent::BlobHeld {
                        sha256,
                        by,
                        purpose,
                        at,
                    },
                    self,
                )
                .await;
            }
            return Ok(());
        }
        sink.write(
            BlobEvent::BlobStored {
                sha256,
                cid,
                size_bytes,
                backend,
                by,
                purpose,
                at,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BlobEvent::BlobStored {
                sha256,
                cid,
                size_bytes,
                by,
                purpose,
                ..
            } => {
                self.stored = true;
                self.sha256 = sha256;
                self.cid = cid;
                self.size_bytes = size_bytes;
                self.hold(by, purpose);
            }
            BlobEvent::BlobHeld { by, purpose, .. } => self.hold(by, purpose),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use cqrs_es::test::TestFramework;

    fn store(sha256: &str, cid: &str) -> BlobCommand {
        BlobCommand::Store {
            sha256: sha256.into(),
            cid: cid.into(),
            size_bytes: 12,
            backend: "local".into(),
            by: "user-1".into(),
            purpose: BlobPurpose::JobInput,
            at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    const SHA: &str = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";
    const CID: &str = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o";

    fn stored() -> BlobEvent {
        let BlobCommand::Store {
            sha256,
            cid,
            size_bytes,
            backend,
            by,
            purpose,
            at,
        } = store(SHA, CID);
        BlobEvent::BlobStored {
            sha256,
            cid,
            size_bytes,
            backend,
            by,
            purpose,
            at,
        }
    }

    #[test]
    fn the_first_store_of_a_content_is_recorded_and_a_second_by_the_same_user_writes_nothing() {
        TestFramework::<Blob>::with(BlobServices)
            .given_no_previous_events()
            .when(store(SHA, CID))
            .then_expect_events(vec![stored()]);
        TestFramework::<Blob>::with(BlobServices)
            .given(vec![stored()])
            .when(store(SHA, CID))
            .then_expect_events(vec![]);
    }

    #[test]
    fn another_uploader_of_the_same_content_is_recorded_as_holding_it() {
        let mut again = store(SHA, CID);
        let BlobCommand::Store { by, .. } = &mut again;
        *by = "user-2".into();
        TestFramework::<Blob>::with(BlobServices)
            .given(vec![stored()])
            .when(again)
            .then_expect_events(vec![BlobEvent::BlobHeld {
                sha256: SHA.into(),
                by: "user-2".into(),
                purpose: BlobPurpose::JobInput,
                at: OffsetDateTime::UNIX_EPOCH,
            }]);
    }

    #[test]
    fn only_its_uploaders_and_the_creators_of_the_jobs_that_wrote_it_may_use_a_blob() {
        let mut blob = Blob::default();
        blob.apply(stored());
        blob.apply(BlobEvent::BlobHeld {
            sha256: SHA.into(),
            by: "node:n1".into(),
            purpose: BlobPurpose::JobOutput {
                job_id: "job-9".into(),
                attempt: 1,
            },
            at: OffsetDateTime::UNIX_EPOCH,
        });
        assert!(blob.usable_by("user-1", |_| false));
        assert!(!blob.usable_by("user-2", |_| false));
        assert!(blob.usable_by("user-2", |job| job == "job-9"));
        assert!(!Blob::default().usable_by("user-1", |_| true));
    }

    #[test]
    fn malformed_digests_are_refused() {
        TestFramework::<Blob>::with(BlobServices)
            .given_no_previous_events()
            .when(store("ABC", CID))
            .then_expect_error(BlobError::InvalidSha256("ABC".into()));
        TestFramework::<Blob>::with(BlobServices)
            .given_no_previous_events()
            .when(store(SHA, "Qm0"))
            .then_expect_error(BlobError::InvalidCid("Qm0".into()));
    }
}

//! Content-addressed model storage. Every backend streams an upload while computing its SHA-256
//! and its IPFS content identifier exactly as `ipfs add` does with Kubo's defaults (`cid`), keeps
//! nothing of an upload that was cut off or too large, and verifies the bytes it serves against
//! the SHA-256 they are stored under. Backends behind [`BlobStore`]: a local directory (`local`,
//! the embedded default), S3-compatible storage (`s3`) and an IPFS node's Kubo RPC (`ipfs`).

pub use aiforge_domain::cid;
pub mod import;
pub mod ipfs;
pub mod local;
pub mod s3;

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;

pub use import::{HfImporter, HfSettings, HfSource, ImportError};
pub use ipfs::{IpfsBlobStore, IpfsSettings};
pub use local::{BlobError, LocalBlobStore, StoredBlob};
pub use s3::{S3BlobStore, S3Settings};

/// The bytes of a stored blob. Its last item is `Err(BlobError::Corrupt)` when the bytes served
/// do not hash to the SHA-256 they were asked for, so a consumer that reads to the end either
/// gets the exact content or an error, never a silently wrong file.
pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, BlobError>> + Send>>;

/// One content-addressed blob store.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The backend's name (`local`, `s3`, `ipfs`), for the model view and the logs.
    fn backend(&self) -> &'static str;

    /// Streams `reader` into the store, at most `limit_bytes`; a blob already stored under the
    /// same SHA-256 is kept as it is (content addressing makes the upload idempotent).
    async fn put(
        &self,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        limit_bytes: u64,
    ) -> Result<StoredBlob, BlobError>;

    async fn exists(&self, blob: &StoredBlob) -> Result<bool, BlobError>;

    /// The blob's bytes, verified as they stream (see [`BlobStream`]).
    async fn get(&self, blob: &StoredBlob) -> Result<BlobStream, BlobError>;

    /// Removes the blob; removing a blob that is not there is not an error.
    async fn delete(&self, blob: &StoredBlob) -> Result<(), BlobError>;
}

/// Removes the bytes of an upload whose command was refused (invalid metadata, a group the
/// user is not in, a broken form), so a refused upload keeps nothing: unless a recorded fact
/// names the same content (content addressing: they may be another model's or another user's
/// file). A failure here is logged; the client's answer is the refusal.
pub async fn discard_refused(
    db: &crate::store::Database,
    store: &dyn BlobStore,
    blob: &StoredBlob,
) {
    match db.content_recorded(&blob.sha256).await {
        Ok(false) => {
            if let Err(e) = store.delete(blob).await {
                tracing::warn!(error = %e, sha256 = %blob.sha256, "removing a refused upload failed");
            }
        }
        Ok(true) => {}
        Err(e) => {
            tracing::warn!(error = %e, sha256 = %blob.sha256, "a refused upload is kept: its references could not be read")
        }
    }
}

/// Runs `record`, the command that makes `blob` (just stored) referenced; when it fails, the
/// bytes are discarded ([`discard_refused`]) before the error is returned.
pub async fn recorded_or_discarded<T, E>(
    db: &crate::store::Database,
    store: &dyn BlobStore,
    blob: &StoredBlob,
    record: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let result = record.await;
    if result.is_err() {
        discard_refused(db, store, blob).await;
    }
    result
}

/// Wraps a raw byte stream so that it ends in `BlobError::Corrupt` unless the bytes hash to
/// `sha256` (and their length is `size_bytes`): the one verification every backend shares.
/// Each chunk is held back until the next one arrives, and the last is released only after the
/// check passes, so a consumer that knows the length (an HTTP client with Content-Length) can
/// never receive a complete corrupt file either.
pub fn verified_stream<S>(sha256: String, size_bytes: u64, inner: S) -> BlobStream
where
    S: Stream<Item = Result<Bytes, BlobError>> + Send + 'static,
{
    use futures::StreamExt;
    struct State<S> {
        inner: Pin<Box<S>>,
        hasher: Option<Sha256>,
        held: Option<Bytes>,
        seen: u64,
        sha256: String,
        size_bytes: u64,
    }
    let state = State {
        inner: Box::pin(inner),
        hasher: Some(Sha256::new()),
        held: None,
        seen: 0,
        sha256,
        size_bytes,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        loop {
            let hasher = state.hasher.as_mut()?;
            match state.inner.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    state.seen += chunk.len() as u64;
                    match state.held.replace(chunk) {
                        Some(previous) => return Some((Ok(previous), state)),
                        None => continue,
                    }
                }
                Some(Err(e)) => {
                    state.hasher = None;
                    state.held = None;
                    return Some((Err(e), state));
                }
                None => {
                    let hasher = state.hasher.take()?;
                    let actual = hex::encode(hasher.finalize());
                    if actual == state.sha256 && state.seen == state.size_bytes {
                        return state.held.take().map(|last| (Ok(last), state));
                    }
                    state.held = None;
                    let error = BlobError::Corrupt {
                        sha256: state.sha256.clone(),
                        actual,
                    };
                    return Some((Err(error), state));
                }
            }
        }
    }))
}

/// SHA-256, CID and size of an upload as it streams, with its byte limit: what every backend
/// computes on its side of the wire, whatever the remote end says.
pub(crate) struct UploadDigest {
    sha256: Sha256,
    cid: cid::CidV0Builder,
    size_bytes: u64,
    limit_bytes: u64,
}

impl UploadDigest {
    pub(crate) fn new(limit_bytes: u64) -> Self {
        Self {
            sha256: Sha256::new(),
            cid: cid::CidV0Builder::new(),
            size_bytes: 0,
            limit_bytes,
        }
    }

    /// Takes the next bytes; `TooLarge` as soon as the total passes the limit, before the bytes
    /// are passed on to the backend.
    pub(crate) fn update(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.size_bytes += bytes.len() as u64;
        if self.size_bytes > self.limit_bytes {
            return Err(BlobError::TooLarge {
                limit_bytes: self.limit_bytes,
            });
        }
        self.sha256.update(bytes);
        self.cid.update(bytes);
        Ok(())
    }

    pub(crate) fn finish(self) -> StoredBlob {
        StoredBlob {
            sha256: hex::encode(self.sha256.finalize()),
            cid: self.cid.finish(),
            size_bytes: self.size_bytes,
        }
    }
}

/// Ends a byte stream with an error when no chunk arrives for `idle`: a stalled server or
/// node must not hold a download open forever, yet a large blob may take as long as it needs.
pub(crate) fn idle_timeout_stream<S>(
    backend: &'static str,
    idle: std::time::Duration,
    inner: S,
) -> impl Stream<Item = Result<Bytes, BlobError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, BlobError>> + Send + 'static,
{
    use futures::StreamExt;
    futures::stream::unfold(Some(Box::pin(inner)), move |state| async move {
        let mut inner = state?;
        match tokio::time::timeout(idle, inner.next()).await {
            Ok(Some(item)) => Some((item, Some(inner))),
            Ok(None) => None,
            Err(_) => Some((
                Err(BlobError::backend(
                    backend,
                    format!("no data for {} s", idle.as_secs()),
                )),
                None,
            )),
        }
    })
}
#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, BlobError>> {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn good_bytes_stream_through_whole() {
        let sha = hex::encode(Sha256::digest(b"hello world"));
        let out: Vec<_> = verified_stream(sha, 11, chunks(&[b"hello", b" ", b"world"]))
            .collect()
            .await;
        let bytes: Vec<u8> = out.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        assert_eq!(bytes, b"hello world");
    }

    #[tokio::test]
    async fn the_last_chunk_of_corrupt_bytes_is_never_released() {
        let sha = hex::encode(Sha256::digest(b"hello world"));
        let out: Vec<_> = verified_stream(sha, 11, chunks(&[b"hello", b" ", b"worle"]))
            .collect()
            .await;
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap().as_ref(), b"hello");
        assert_eq!(out[1].as_ref().unwrap().as_ref(), b" ");
        assert!(matches!(out[2], Err(BlobError::Corrupt { .. })));
        // A single-chunk corrupt blob releases nothing at all.
        let sha = hex::encode(Sha256::digest(b"hello world"));
        let out: Vec<_> = verified_stream(sha, 11, chunks(&[b"hello worle"]))
            .collect()
            .await;
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
    }
}

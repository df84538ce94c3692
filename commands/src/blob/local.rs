//! The local-directory blob store (the embedded default). An upload streams into a temp file
//! while SHA-256 and the IPFS CID are computed, with a byte limit; only a complete upload within
//! the limit is fsynced and renamed into place (`sha256/<first two hex>/<sha256>`), so an upload
//! cut off midway, or too large, leaves nothing behind. Reads are verified: a blob whose bytes no
//! longer hash to its name fails at the end of the read instead of being served as good.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::cid::CidV0Builder;
use super::{verified_stream, BlobStore, BlobStream};

/// Read buffer: what an upload holds in memory at a time, whatever its size.
pub const UPLOAD_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("the upload exceeds the limit of {limit_bytes} bytes")]
    TooLarge { limit_bytes: u64 },
    #[error("no blob with sha256 {0}")]
    NotFound(String),
    #[error("blob {sha256} is corrupt: its content hashes to {actual}")]
    Corrupt { sha256: String, actual: String },
    #[error("'{0}' is not a sha256 hex digest")]
    BadDigest(String),
    #[error("'{0}' is not a CIDv0")]
    BadCid(String),
    #[error("blob store io: {0}")]
    Io(#[from] std::io::Error),
    /// The IPFS node stored the upload under another CID than the one computed here: its
    /// chunking or DAG settings differ from Kubo's defaults. What it pinned has been unpinned.
    #[error("the IPFS node computed CID {actual}, expected {expected}")]
    CidMismatch { expected: String, actual: String },
    /// A remote backend (S3, the IPFS node) failed or could not be reached.
    #[error("{backend} blob backend: {source}")]
    Backend {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A backend's settings cannot work (an endpoint that is not a URL, a bad key prefix).
    #[error("blob store settings: {0}")]
    Config(String),
}

impl BlobError {
    pub(crate) fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Backend {
            backend,
            source: source.into(),
        }
    }
}

/// What a stored blob is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    pub sha256: String,
    pub cid: String,
    pub size_bytes: u64,
}

pub struct LocalBlobStore {
    root: PathBuf,
}

pub(crate) fn check_digest(sha256: &str) -> Result<(), BlobError> {
    if sha256.len() == 64
        && sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(BlobError::BadDigest(sha256.to_string()))
    }
}

impl LocalBlobStore {
    pub async fn open(root: &Path) -> Result<Self, BlobError> {
        tokio::fs::create_dir_all(root.join("tmp")).await?;
        tokio::fs::create_dir_all(root.join("sha256")).await?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn path_of(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(&sha256[..2]).join(sha256)
    }

    /// Streams `reader` into the store; at most `limit_bytes`.
    async fn put_file(
        &self,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        limit_bytes: u64,
    ) -> Result<StoredBlob, BlobError> {
        let temp = self.root.join("tmp").join(uuid::Uuid::new_v4().to_string());
        let result = self.write_temp(reader, limit_bytes, &temp).await;
        match result {
            Ok(blob) => {
                let target = self.path_of(&blob.sha256);
                if let Some(dir) = target.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                if tokio::fs::try_exists(&target).await? {
                    // Same content already stored: content addressing makes this a no-op.
                    tokio::fs::remove_file(&temp).await?;
                } else {
                    tokio::fs::rename(&temp, &target).await?;
                }
                Ok(blob)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }

    async fn write_temp(
        &self,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        limit_bytes: u64,
        temp: &Path,
    ) -> Result<StoredBlob, BlobError> {
        let mut file = tokio::fs::File::create(temp).await?;
        let mut sha = Sha256::new();
        let mut cid = CidV0Builder::new();
        let mut size: u64 = 0;
        let mut buffer = vec![0u8; UPLOAD_BUFFER_BYTES];
        loop {
            let read = reader.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            size += read as u64;
            if size > limit_bytes {
                return Err(BlobError::TooLarge { limit_bytes });
            }
            sha.update(&buffer[..read]);
            cid.update(&buffer[..read]);
            file.write_all(&buffer[..read]).await?;
        }
        file.sync_all().await?;
        Ok(StoredBlob {
            sha256: hex::encode(sha.finalize()),
            cid: cid.finish(),
            size_bytes: size,
        })
    }

    /// Copies the blob to `out`, verifying its hash; a mismatch is an error after the copy,
    /// so callers must treat `out` as untrusted until this returns Ok.
    pub async fn read_verified(
        &self,
        blob: &StoredBlob,
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<u64, BlobError> {
        use futures::StreamExt;
        let mut stream = self.get(blob).await?;
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).await?;
            size += chunk.len() as u64;
        }
        Ok(size)
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalBlobStore {
    fn backend(&self) -> &'static str {
        "local"
    }

    async fn put(
        &self,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        limit_bytes: u64,
    ) -> Result<StoredBlob, BlobError> {
        self.put_file(reader, limit_bytes).await
    }

    async fn exists(&self, blob: &StoredBlob) -> Result<bool, BlobError> {
        check_digest(&blob.sha256)?;
        Ok(tokio::fs::try_exists(self.path_of(&blob.sha256)).await?)
    }

    async fn get(&self, blob: &StoredBlob) -> Result<BlobStream, BlobError> {
        check_digest(&blob.sha256)?;
        let file = match tokio::fs::File::open(self.path_of(&blob.sha256)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(blob.sha256.clone()))
            }
            Err(e) => return Err(e.into()),
        };
        use futures::TryStreamExt;
        let bytes = tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_BUFFER_BYTES)
            .map_err(BlobError::from);
        Ok(verified_stream(blob.sha256.clone(), blob.size_bytes, bytes))
    }

    async fn delete(&self, blob: &StoredBlob) -> Result<(), BlobError> {
        check_digest(&blob.sha256)?;
        match tokio::fs::remove_file(self.path_of(&blob.sha256)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    async fn store() -> (LocalBlobStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("aiforge-blob-{}", uuid::Uuid::new_v4()));
        (LocalBlobStore::open(&dir).await.unwrap(), dir)
    }

    /// Yields `total` bytes of a pattern, `step` at a time, then fails if `fail` is set.
    struct Source {
        sent: usize,
        total: usize,
        fail: bool,
    }

    impl AsyncRead for Source {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.sent == self.total {
                return Poll::Ready(if self.fail {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "client went away",
                    ))
                } else {
                    Ok(())
                });
            }
            let n = buf.remaining().min(self.total - self.sent).min(50_000);
            let start = self.sent;
            let bytes: Vec<u8> = (start..start + n).map(|i| (i % 251) as u8).collect();
            buf.put_slice(&bytes);
            self.sent += n;
            Poll::Ready(Ok(()))
        }
    }

    fn files_under(dir: &Path) -> usize {
        walk(dir).len()
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    out.extend(walk(&path));
                } else {
                    out.push(path);
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn an_upload_is_stored_under_its_sha256_with_its_ipfs_cid() {
        let (store, dir) = store().await;
        let blob = store.put(&mut &b"hello world"[..], 1024).await.unwrap();
        assert_eq!(blob.cid, "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD");
        assert_eq!(
            blob.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert!(store.exists(&blob).await.unwrap());
        let mut out = Vec::new();
        assert_eq!(store.read_verified(&blob, &mut out).await.unwrap(), 11);
        assert_eq!(out, b"hello world");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_large_upload_streams_through_a_small_buffer() {
        let (store, dir) = store().await;
        let total = 20 * 1024 * 1024 + 7;
        let mut source = Source {
            sent: 0,
            total,
            fail: false,
        };
        let blob = store.put(&mut source, u64::MAX).await.unwrap();
        assert_eq!(blob.size_bytes, total as u64);
        let expected: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        assert_eq!(blob.cid, super::super::cid::cid_v0(&expected));
        assert_eq!(blob.sha256, hex::encode(Sha256::digest(&expected)));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_upload_cut_off_midway_leaves_nothing_behind() {
        let (store, dir) = store().await;
        let mut source = Source {
            sent: 0,
            total: 300_000,
            fail: true,
        };
        assert!(matches!(
            store.put(&mut source, u64::MAX).await,
            Err(BlobError::Io(_))
        ));
        assert_eq!(files_under(&dir), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_upload_over_the_limit_is_refused_and_leaves_nothing_behind() {
        let (store, dir) = store().await;
        let mut source = Source {
            sent: 0,
            total: 100_001,
            fail: false,
        };
        assert!(matches!(
            store.put(&mut source, 100_000).await,
            Err(BlobError::TooLarge {
                limit_bytes: 100_000
            })
        ));
        assert_eq!(files_under(&dir), 0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_tampered_blob_fails_verification_on_read() {
        let (store, dir) = store().await;
        let blob = store.put(&mut &b"model weights"[..], 1024).await.unwrap();
        std::fs::write(store.path_of(&blob.sha256), b"model weightz").unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            store.read_verified(&blob, &mut out).await,
            Err(BlobError::Corrupt { .. })
        ));
        let bad = StoredBlob {
            sha256: "nothex".into(),
            ..blob.clone()
        };
        assert!(matches!(
            store.read_verified(&bad, &mut out).await,
            Err(BlobError::BadDigest(_))
        ));
        let missing = StoredBlob {
            sha256: "0".repeat(64),
            ..blob.clone()
        };
        assert!(matches!(
            store.read_verified(&missing, &mut out).await,
            Err(BlobError::NotFound(_))
        ));
        store.delete(&blob).await.unwrap();
        assert!(!store.exists(&blob).await.unwrap());
        store.delete(&blob).await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! The S3-compatible blob store (AWS S3, MinIO, s3s-fs, ...) over `object_store`. An upload
//! streams as a multipart upload to a temporary key (`<prefix>/tmp/<uuid>`) while SHA-256 and
//! the CID are computed, since the name it is stored under is known only at the end; a complete
//! upload within the limit is then copied to `<prefix>/sha256/<hex>` (skipped when that object
//! exists) and the temporary object deleted. An upload that fails, is cut off or passes the limit
//! is aborted, so no object and no parts remain. Reads stream and are verified like every backend's.
//!
//! What must not live here: decisions about which models may be stored (the command layer's).
//! Left to the bucket's own policy: a lifecycle rule that aborts incomplete multipart uploads and
//! expires `tmp/` after a day, for the one case this code cannot clean up after (the process
//! killed mid-upload).

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig, WriteMultipart};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::local::check_digest;
use super::{
    idle_timeout_stream, verified_stream, BlobError, BlobStore, BlobStream, StoredBlob,
    UploadDigest,
};

const BACKEND: &str = "s3";

/// S3's smallest part (except the last): what an upload holds in memory per part by default.
/// S3 allows 10,000 parts, so this default stores files up to about 50 GB; raise `part_bytes`
/// for larger ones.
pub const PART_BYTES_DEFAULT: usize = 5 * 1024 * 1024;
/// Parts uploading at once; memory held is at most (this + 1) x `part_bytes`.
pub const PARTS_IN_FLIGHT_MAX: usize = 2;
/// Read buffer of the incoming upload.
const READ_BUFFER_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT_SECS: u64 = 5;
/// No whole-request timeout (a large download takes as long as it takes); a request whose server
/// sends nothing for this long fails instead.
const READ_IDLE_TIMEOUT_SECS: u64 = 120;
const RETRIES_MAX: usize = 3;
const RETRY_TIMEOUT_SECS: u64 = 60;

/// Where and how to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `http://127.0.0.1:9000` for a local server; None for AWS's endpoint of `region`.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    /// Plain-HTTP endpoints (local servers); AWS itself needs none.
    pub allow_http: bool,
    /// `endpoint/bucket/key` instead of `bucket.endpoint/key`: what most S3-compatible
    /// servers want.
    pub path_style: bool,
    /// Keys live under this prefix (`models` gives `models/sha256/<hex>`); empty for the bucket
    /// root. Segments of letters, digits, `.`, `_`, `-`, separated by `/`.
    pub key_prefix: String,
    /// Multipart part size, at least 5 MiB (S3's minimum).
    pub part_bytes: usize,
}

impl S3Settings {
    /// Settings for a bucket with the defaults: region `us-east-1`, path-style, HTTPS only, no
    /// prefix, 5 MiB parts.
    pub fn new(
        bucket: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: SecretString,
    ) -> Self {
        Self {
            endpoint: None,
            region: "us-east-1".into(),
            bucket: bucket.into(),
            access_key_id: access_key_id.into(),
            secret_access_key,
            allow_http: false,
            path_style: true,
            key_prefix: String::new(),
            part_bytes: PART_BYTES_DEFAULT,
        }
    }
}

pub struct S3BlobStore {
    store: Arc<AmazonS3>,
    prefix: Vec<String>,
    part_bytes: usize,
}

fn backend_error(e: object_store::Error) -> BlobError {
    BlobError::backend(BACKEND, e)
}

fn prefix_segments(prefix: &str) -> Result<Vec<String>, BlobError> {
    let trimmed = prefix.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .map(|segment| {
            let ok = !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if ok {
                Ok(segment.to_string())
            } else {
                Err(BlobError::Config(format!(
                    "S3 key prefix '{prefix}': segments may hold only letters, digits, '.', '_', '-'"
                )))
            }
        })
        .collect()
}

impl S3BlobStore {
    /// Checks the settings and builds the client; makes no request (the bucket must exist).
    pub fn new(settings: &S3Settings) -> Result<Self, BlobError> {
        if settings.part_bytes < PART_BYTES_DEFAULT {
            return Err(BlobError::Config(format!(
                "S3 part size {} bytes is below S3's minimum of {PART_BYTES_DEFAULT}",
                settings.part_bytes
            )));
        }
        let prefix = prefix_segments(&settings.key_prefix)?;
        let client = ClientOptions::new()
            .with_allow_http(settings.allow_http)
            .with_timeout_disabled()
            .with_connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS))
            .with_read_timeout(Duration::from_secs(READ_IDLE_TIMEOUT_SECS));
        let retry = RetryConfig {
            max_retries: RETRIES_MAX,
            retry_timeout: Duration::from_secs(RETRY_TIMEOUT_SECS),
            ..RetryConfig::default()
        };
        // object_store's HTTP client is reqwest 0.13 with rustls and no bundled provider.
        crate::chain::ethereum::install_ring_crypto_provider();
        let mut builder = AmazonS3Builder::new()
            .with_region(&settings.region)
            .with_bucket_name(&settings.bucket)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(settings.secret_access_key.expose_secret())
            .with_allow_http(settings.allow_http)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder
            .build()
            .map_err(|e| BlobError::Config(format!("S3 settings: {e}")))?;
        Ok(Self {
            store: Arc::new(store),
            prefix,
            part_bytes: settings.part_bytes,
        })
    }

    fn key(&self, parts: &[&str]) -> ObjectPath {
        ObjectPath::from_iter(
            self.prefix
                .iter()
                .map(String::as_str)
                .chain(parts.iter().copied()),
        )
    }

    /// The key a blob is stored under: `<prefix>/sha256/<hex>`.
    pub fn key_of(&self, sha256: &str) -> String {
        self.key(&["sha256", sha256]).to_string()
    }

    /// Every key under the store's prefix (temporary objects included): for tests and audits.
    pub async fn list_keys(&self) -> Result<Vec<String>, BlobError> {
        let prefix = self.key(&[]);
        let prefix = (!self.prefix.is_empty()).then_some(&prefix);
        self.store
            .list(prefix)
            .map_ok(|meta| meta.location.to_string())
            .map_err(backend_error)
            .try_collect()
            .await
    }

    /// Reads `reader` into the multipart upload, a part at a time, waiting for a free slot
    /// before each part is handed over so memory stays bounded.
    async fn stream_parts(
        &self,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        digest: &mut UploadDigest,
        writer: &mut WriteMultipart,
    ) -> Result<(), BlobError> {
        let mut buffer = vec![0u8; READ_BUFFER_BYTES];
        loop {
            let read = reader.read(&mut buffer).await?;
            if read == 0 {
                return Ok(());
            }
            digest.update(&buffer[..read])?;
            writer
                .wait_for_capacity(PARTS_IN_FLIGHT_MAX)
                .await
                .map_err(backend_error)?;
            writer.write(&buffer[..read]);
        }
    }

    /// Moves the complete temporary object to its content address.
    async fn settle(&self, temp: &ObjectPath, blob: &StoredBlob) -> Result<(), BlobError> {
        let target = self.key(&["sha256", &blob.sha256]);
        let copied = match self.store.head(&target).await {
            // Same content already stored: content addressing makes this a no-op.
            Ok(_) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => {
                self.store.copy(temp, &target).await.map_err(backend_error)
            }
            Err(e) => Err(backend_error(e)),
        };
        let deleted = self.store.delete(temp).await.map_err(backend_error);
        copied.and(deleted)
    }
}

/// Aborts the multipart upload if the `put` future is dropped midway (the client went away and
/// the request handler was cancelled), so its parts do not linger in the bucket.
struct AbortOnDrop(Option<WriteMultipart>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let (Some(writer), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current())
        {
            runtime.spawn(async move {
                if let Err(e) = writer.abort().await {
                    tracing::warn!(error = %e, "aborting an abandoned S3 multipart upload failed");
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for S3BlobStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(skip_all, fields(limit_bytes))]
    async fn put(
        &self,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        limit_bytes: u64,
    ) -> Result<StoredBlob, BlobError> {
        let temp = self.key(&["tmp", &uuid::Uuid::new_v4().to_string()]);
        let upload = self
            .store
            .put_multipart(&temp)
            .await
            .map_err(backend_error)?;
        let mut guard = AbortOnDrop(Some(WriteMultipart::new_with_chunk_size(
            upload,
            self.part_bytes,
        )));
        let mut digest = UploadDigest::new(limit_bytes);
        let streamed = match guard.0.as_mut() {
            Some(writer) => self.stream_parts(reader, &mut digest, writer).await,
            None => Ok(()),
        };
        let Some(writer) = guard.0.take() else {
            return Err(BlobError::Config(
                "internal: the multipart writer is gone".into(),
            ));
        };
        if let Err(e) = streamed {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "aborting an S3 multipart upload failed");
            }
            return Err(e);
        }
        // `finish` aborts the upload itself when a part or the completion fails.
        writer.finish().await.map_err(backend_error)?;
        let blob = digest.finish();
        self.settle(&temp, &blob).await?;
        Ok(blob)
    }

    async fn exists(&self, blob: &StoredBlob) -> Result<bool, BlobError> {
        check_digest(&blob.sha256)?;
        match self.store.head(&self.key(&["sha256", &blob.sha256])).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(backend_error(e)),
        }
    }

    async fn get(&self, blob: &StoredBlob) -> Result<BlobStream, BlobError> {
        check_digest(&blob.sha256)?;
        let result = match self.store.get(&self.key(&["sha256", &blob.sha256])).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(BlobError::NotFound(blob.sha256.clone()))
            }
            Err(e) => return Err(backend_error(e)),
        };
        let bytes = result.into_stream().map_err(backend_error);
        let bytes = idle_timeout_stream(
            BACKEND,
            Duration::from_secs(READ_IDLE_TIMEOUT_SECS),
            bytes.boxed(),
        );
        Ok(verified_stream(blob.sha256.clone(), blob.size_bytes, bytes))
    }

    async fn delete(&self, blob: &StoredBlob) -> Result<(), BlobError> {
        check_digest(&blob.sha256)?;
        match self
            .store
            .delete(&self.key(&["sha256", &blob.sha256]))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(backend_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_prefix_is_split_into_checked_segments() {
        assert_eq!(prefix_segments("").unwrap(), Vec::<String>::new());
        assert_eq!(prefix_segments("/models/v1/").unwrap(), ["models", "v1"]);
        assert!(prefix_segments("a/../b").is_err());
        assert!(prefix_segments("a//b").is_err());
        assert!(prefix_segments("a b").is_err());
    }

    #[test]
    fn parts_below_the_s3_minimum_are_refused() {
        let mut settings = S3Settings::new("b", "k", SecretString::from("s"));
        settings.part_bytes = 1024;
        assert!(matches!(
            S3BlobStore::new(&settings),
            Err(BlobError::Config(_))
        ));
    }
}

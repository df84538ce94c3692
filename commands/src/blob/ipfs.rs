//! The IPFS blob store: blobs are added to and pinned on an IPFS node through its Kubo HTTP RPC
//! (`/api/v0/add`, `cat`, `pin/ls`, `pin/rm`; Kubo itself or any node that speaks the same RPC).
//! An upload streams to `add` (`pin=true`, CIDv0, Kubo's default chunker) while SHA-256 and the
//! CID are computed here; the CID the node answers must equal ours, so a node with other chunking
//! settings cannot silently store the model under an address the catalogue does not know. An
//! upload cut off or past the limit is aborted before its multipart body ends, so the node never
//! completes the add and pins nothing (blocks it kept are unpinned, for its garbage collector).
//!
//! The node's RPC has no authentication of its own: it must listen only where this server can
//! reach it (localhost or a private network). What must not live here: gateway URLs for users.

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::local::check_digest;
use super::{
    idle_timeout_stream, verified_stream, BlobError, BlobStore, BlobStream, StoredBlob,
    UploadDigest,
};

const BACKEND: &str = "ipfs";

/// Read buffer of an upload; also the size of the chunks sent on to the node.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Chunks queued between the reader and the request body.
const BODY_CHUNKS_QUEUED_MAX: usize = 4;
/// Answers of the RPC calls other than `add`'s body and `cat`'s stream are small.
const RPC_ANSWER_BYTES_MAX: usize = 64 * 1024;

/// How to reach the node.
#[derive(Debug, Clone)]
pub struct IpfsSettings {
    /// The RPC's base URL, e.g. `http://127.0.0.1:5001` (Kubo's default API address).
    pub api_url: String,
    pub connect_timeout: Duration,
    /// Small calls (`pin/ls`, `pin/rm`) must answer within this.
    pub rpc_timeout: Duration,
    /// A stream (the upload's body going out, a `cat` coming in) that moves no data for this
    /// long fails; so does an `add` that does not answer this long after its body ended.
    pub idle_timeout: Duration,
}

impl IpfsSettings {
    pub fn new(api_url: impl Into<String>) -> Self {
        Self {
            api_url: api_url.into(),
            connect_timeout: Duration::from_secs(5),
            rpc_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

pub struct IpfsBlobStore {
    client: reqwest::Client,
    api: reqwest::Url,
    settings: IpfsSettings,
}

fn rpc_error(e: reqwest::Error) -> BlobError {
    BlobError::backend(BACKEND, e.without_url())
}

/// A CIDv0 is a base58btc sha2-256 multihash (`Qm...`, 46 characters).
fn check_cid(cid: &str) -> Result<(), BlobError> {
    match bs58::decode(cid).into_vec() {
        Ok(bytes) if cid.len() == 46 && bytes.len() == 34 && bytes[..2] == [0x12, 0x20] => Ok(()),
        _ => Err(BlobError::BadCid(cid.to_string())),
    }
}

/// The JSON error body Kubo answers with (`{"Message":..,"Code":..,"Type":"error"}`).
#[derive(serde::Deserialize)]
struct RpcError {
    #[serde(rename = "Message")]
    message: String,
}

#[derive(serde::Deserialize)]
struct Added {
    #[serde(rename = "Hash")]
    hash: Option<String>,
    #[serde(rename = "Message")]
    message: Option<String>,
}

impl IpfsBlobStore {
    pub fn new(settings: IpfsSettings) -> Result<Self, BlobError> {
        let mut api = reqwest::Url::parse(&settings.api_url)
            .map_err(|e| BlobError::Config(format!("IPFS API URL '{}': {e}", settings.api_url)))?;
        if !matches!(api.scheme(), "http" | "https") {
            return Err(BlobError::Config(format!(
                "IPFS API URL '{}' is not http(s)",
                settings.api_url
            )));
        }
        if !api.path().ends_with('/') {
            let path = format!("{}/", api.path());
            api.set_path(&path);
        }
        // No client-wide timeout: an `add` body takes as long as the upload does. Each call
        // gets its own limit below.
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .build()
            .map_err(|e| BlobError::Config(format!("IPFS client: {e}")))?;
        Ok(Self {
            client,
            api,
            settings,
        })
    }

    fn url(&self, command: &str) -> Result<reqwest::Url, BlobError> {
        self.api
            .join(&format!("api/v0/{command}"))
            .map_err(|e| BlobError::Config(format!("IPFS API URL: {e}")))
    }

    /// Reads a small answer; Err with the node's message when it is not a success.
    async fn small_answer(response: reqwest::Response) -> Result<(bool, String), BlobError> {
        let ok = response.status().is_success();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(rpc_error)?;
            if body.len() + chunk.len() > RPC_ANSWER_BYTES_MAX {
                return Err(BlobError::backend(
                    BACKEND,
                    "the node's answer is too large",
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        if ok {
            Ok((true, text))
        } else {
            let message = serde_json::from_str::<RpcError>(&text)
                .map(|e| e.message)
                .unwrap_or(text);
            Ok((false, message))
        }
    }

    /// One small RPC call: Ok(Ok(body)) on success, Ok(Err(message)) when the node refused.
    async fn call(
        &self,
        command: &str,
        query: &[(&str, &str)],
    ) -> Result<Result<String, String>, BlobError> {
        let response = self
            .client
            .post(self.url(command)?)
            .query(query)
            .timeout(self.settings.rpc_timeout)
            .send()
            .await
            .map_err(rpc_error)?;
        let (ok, text) = Self::small_answer(response).await?;
        Ok(if ok { Ok(text) } else { Err(text) })
    }

    /// Whether `cid` is pinned (recursively, as `add` pins).
    async fn pinned(&self, cid: &str) -> Result<bool, BlobError> {
        match self
            .call("pin/ls", &[("arg", cid), ("type", "recursive")])
            .await?
        {
            Ok(body) => Ok(body.contains(cid)),
            Err(message) if message.contains("not pinned") => Ok(false),
            Err(message) => Err(BlobError::backend(BACKEND, format!("pin/ls: {message}"))),
        }
    }

    async fn unpin(&self, cid: &str) -> Result<(), BlobError> {
        match self.call("pin/rm", &[("arg", cid)]).await? {
            Ok(_) => Ok(()),
            Err(message) if message.contains("not pinned") => Ok(()),
            Err(message) => Err(BlobError::backend(BACKEND, format!("pin/rm: {message}"))),
        }
    }

    /// Reads `reader` into the request body, hashing as it goes. On an error (the reader's, or
    /// the limit) the body is ended with an error, which makes the HTTP client drop the
    /// connection before the multipart body is complete. Ok(false) when the request ended before
    /// the reader did.
    async fn feed(
        &self,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        digest: &mut UploadDigest,
        body: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<bool, BlobError> {
        let mut buffer = vec![0u8; READ_BUFFER_BYTES];
        loop {
            let next = match reader.read(&mut buffer).await {
                Ok(0) => return Ok(true),
                Ok(read) => digest
                    .update(&buffer[..read])
                    .map(|()| Bytes::copy_from_slice(&buffer[..read])),
                Err(e) => Err(BlobError::Io(e)),
            };
            let chunk = match next {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = body
                        .send(Err(std::io::Error::other("upload abandoned")))
                        .await;
                    return Err(e);
                }
            };
            match tokio::time::timeout(self.settings.idle_timeout, body.send(Ok(chunk))).await {
                Ok(Ok(())) => {}
                // The request ended (the node answered early or the connection failed): its
                // own result says why.
                Ok(Err(_)) => return Ok(false),
                Err(_) => {
                    return Err(BlobError::backend(
                        BACKEND,
                        "the node took no data for the idle timeout",
                    ))
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for IpfsBlobStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(skip_all, fields(limit_bytes))]
    async fn put(
        &self,
        reader: &mut (dyn AsyncRead + Unpin + Send),
        limit_bytes: u64,
    ) -> Result<StoredBlob, BlobError> {
        let (tx, rx) = tokio::sync::mpsc::channel(BODY_CHUNKS_QUEUED_MAX);
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body))
            .file_name("blob")
            .mime_str("application/octet-stream")
            .map_err(rpc_error)?;
        let form = reqwest::multipart::Form::new().part("file", part);
        let request = self
            .client
            .post(self.url("add")?)
            .query(&[("pin", "true"), ("cid-version", "0"), ("progress", "false")])
            .multipart(form)
            .send();
        let mut digest = UploadDigest::new(limit_bytes);
        let (response, fed_all) = {
            let feed = self.feed(reader, &mut digest, tx);
            tokio::pin!(request);
            tokio::pin!(feed);
            // Both run together: the request reads the body as the feed fills it. The request
            // ends first only when the node answered early or the connection failed.
            tokio::select! {
                fed = &mut feed => {
                    // On Err, dropping the request here closes the connection mid-body.
                    let fed_all = fed?;
                    match tokio::time::timeout(self.settings.idle_timeout, &mut request).await {
                        Ok(response) => (response.map_err(rpc_error)?, fed_all),
                        Err(_) => {
                            return Err(BlobError::backend(BACKEND, "add: no answer after the upload"))
                        }
                    }
                }
                response = &mut request => (response.map_err(rpc_error)?, false),
            }
        };
        let (ok, text) = Self::small_answer(response).await?;
        if !ok {
            return Err(BlobError::backend(BACKEND, format!("add: {text}")));
        }
        // One JSON object per line; with one file and no progress, one line names it. A node
        // that fails midway may still answer 200 with an error object.
        let mut added = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let entry: Added = serde_json::from_str(line)
                .map_err(|e| BlobError::backend(BACKEND, format!("add answer '{line}': {e}")))?;
            if let Some(message) = entry.message {
                return Err(BlobError::backend(BACKEND, format!("add: {message}")));
            }
            added = entry.hash.or(added);
        }
        let Some(actual) = added else {
            return Err(BlobError::backend(BACKEND, "add: the answer names no CID"));
        };
        if !fed_all {
            // A node that answers success before the body ended added something else.
            if let Err(e) = self.unpin(&actual).await {
                tracing::warn!(error = %e, cid = %actual, "unpinning a premature add failed");
            }
            return Err(BlobError::backend(
                BACKEND,
                "add: answered before the upload ended",
            ));
        }
        let blob = digest.finish();
        if actual != blob.cid {
            if let Err(e) = self.unpin(&actual).await {
                tracing::warn!(error = %e, cid = %actual, "unpinning a mismatched add failed");
            }
            return Err(BlobError::CidMismatch {
                expected: blob.cid,
                actual,
            });
        }
        Ok(blob)
    }

    async fn exists(&self, blob: &StoredBlob) -> Result<bool, BlobError> {
        check_digest(&blob.sha256)?;
        check_cid(&blob.cid)?;
        self.pinned(&blob.cid).await
    }

    async fn get(&self, blob: &StoredBlob) -> Result<BlobStream, BlobError> {
        check_digest(&blob.sha256)?;
        check_cid(&blob.cid)?;
        // Only what this store pinned is served: `cat` of an unknown CID would search the
        // network for it instead of answering "not found".
        if !self.pinned(&blob.cid).await? {
            return Err(BlobError::NotFound(blob.sha256.clone()));
        }
        let response = tokio::time::timeout(
            self.settings.rpc_timeout,
            self.client
                .post(self.url("cat")?)
                .query(&[("arg", blob.cid.as_str())])
                .send(),
        )
        .await
        .map_err(|_| BlobError::backend(BACKEND, "cat: no answer"))?
        .map_err(rpc_error)?;
        if !response.status().is_success() {
            let (_, message) = Self::small_answer(response).await?;
            return Err(BlobError::backend(BACKEND, format!("cat: {message}")));
        }
        let bytes = response.bytes_stream().map_err(rpc_error);
        let bytes = idle_timeout_stream(BACKEND, self.settings.idle_timeout, bytes.boxed());
        Ok(verified_stream(blob.sha256.clone(), blob.size_bytes, bytes))
    }

    /// Unpins the blob; the node's garbage collector frees its blocks when no other pin needs
    /// them.
    async fn delete(&self, blob: &StoredBlob) -> Result<(), BlobError> {
        check_digest(&blob.sha256)?;
        check_cid(&blob.cid)?;
        self.unpin(&blob.cid).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cidv0_strings_reach_the_node() {
        assert!(check_cid("Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD").is_ok());
        assert!(check_cid("Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyf").is_err());
        assert!(check_cid("Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD&arg=x").is_err());
        assert!(check_cid("bafkreihello").is_err());
    }

    #[test]
    fn the_api_url_must_be_http() {
        assert!(IpfsBlobStore::new(IpfsSettings::new("ftp://127.0.0.1:5001")).is_err());
        assert!(IpfsBlobStore::new(IpfsSettings::new("not a url")).is_err());
        let store = IpfsBlobStore::new(IpfsSettings::new("http://127.0.0.1:5001")).unwrap();
        assert_eq!(
            store.url("pin/ls").unwrap().as_str(),
            "http://127.0.0.1:5001/api/v0/pin/ls"
        );
    }
}

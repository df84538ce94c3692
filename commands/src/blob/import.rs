//! Imports a model file from the Hugging Face Hub into any [`BlobStore`]: `GET
//! {hub}/{owner}/{name}/resolve/{revision}/{filename}`, the URL the hub's own clients download
//! through, streamed into the store with the caller's byte limit. The repo id, file name and
//! revision are checked before any request, so nothing a user typed can reach another path.
//!
//! Redirects are followed here (at most [`REDIRECTS_MAX`]) rather than by the HTTP client, for
//! two reasons: the token goes only to the hub's own origin, never to the storage host a large
//! file is redirected to; and the hub's first answer for an LFS file carries its SHA-256
//! (`X-Linked-Etag`) and size (`X-Linked-Size`), so a file over the limit is refused before any
//! byte is downloaded and the bytes stored are checked against what the hub says they are.

use std::time::Duration;

use futures::TryStreamExt;
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::{BlobError, BlobStore, StoredBlob};

pub const HUB_BASE_URL_DEFAULT: &str = "https://huggingface.co";
pub const REVISION_DEFAULT: &str = "main";
/// The hub redirects once (to its storage) or twice (a renamed repo first).
pub const REDIRECTS_MAX: usize = 5;
const REPO_PART_CHARS_MAX: usize = 96;
const FILENAME_BYTES_MAX: usize = 1024;
const REVISION_CHARS_MAX: usize = 256;

#[derive(Debug, Clone)]
pub struct HfSettings {
    /// `https://huggingface.co`, or a mirror with the same URL layout.
    pub base_url: String,
    /// Sent as `Authorization: Bearer` to the hub's origin only (private and gated repos).
    pub token: Option<SecretString>,
    pub connect_timeout: Duration,
    /// Each answer must start, and each read of the body must bring data, within this.
    pub read_timeout: Duration,
}

impl Default for HfSettings {
    fn default() -> Self {
        Self {
            base_url: HUB_BASE_URL_DEFAULT.into(),
            token: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// One file of one repo at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfSource {
    /// `owner/name`.
    pub repo: String,
    /// Path of the file inside the repo, e.g. `model.safetensors` or `onnx/model.onnx`.
    pub filename: String,
    /// Branch, tag or commit; None for `main`.
    pub revision: Option<String>,
}

impl HfSource {
    pub fn new(repo: impl Into<String>, filename: impl Into<String>) -> Self {
        Self {
            repo: repo.into(),
            filename: filename.into(),
            revision: None,
        }
    }

    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or(REVISION_DEFAULT)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("'{0}' is not a Hugging Face repo id (owner/name of letters, digits, '.', '_', '-')")]
    BadRepo(String),
    #[error("'{0}' is not a file name inside a repo")]
    BadFilename(String),
    #[error("'{0}' is not a revision")]
    BadRevision(String),
    #[error("the hub has no file {filename} in {repo} at {revision}")]
    NotFound {
        repo: String,
        filename: String,
        revision: String,
    },
    #[error("the hub refused access to {repo} (HTTP {status}); the repo may be private or gated")]
    Denied { repo: String, status: u16 },
    #[error("the hub answered HTTP {status}")]
    Http { status: u16 },
    #[error("the file exceeds the limit of {limit_bytes} bytes")]
    TooLarge { limit_bytes: u64 },
    #[error("more than {REDIRECTS_MAX} redirects")]
    TooManyRedirects,
    /// The bytes stored hash to something else than the hub says the file is. They stay in the
    /// store under their own hash (content-addressed, referenced by nothing).
    #[error("the hub says the file's sha256 is {expected}, the bytes received hash to {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("hub request: {0}")]
    Transport(#[source] reqwest::Error),
    #[error(transparent)]
    Store(BlobError),
}

impl From<BlobError> for ImportError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::TooLarge { limit_bytes } => Self::TooLarge { limit_bytes },
            other => Self::Store(other),
        }
    }
}

fn repo_part_ok(part: &str) -> bool {
    let bytes = part.as_bytes();
    !part.is_empty()
        && part.len() <= REPO_PART_CHARS_MAX
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
        && !part.contains("..")
        && !part.contains("--")
        && !part.ends_with('.')
}

/// `owner/name`, each part as the hub allows it.
pub fn check_repo(repo: &str) -> Result<(), ImportError> {
    match repo.split_once('/') {
        Some((owner, name)) if repo_part_ok(owner) && repo_part_ok(name) => Ok(()),
        _ => Err(ImportError::BadRepo(repo.to_string())),
    }
}

/// A relative path inside the repo: no leading `/`, no `.`/`..` or empty segment, no backslash
/// or control character.
pub fn check_filename(filename: &str) -> Result<(), ImportError> {
    let ok = !filename.is_empty()
        && filename.len() <= FILENAME_BYTES_MAX
        && !filename.chars().any(|c| c.is_control() || c == '\\')
        && filename
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..");
    if ok {
        Ok(())
    } else {
        Err(ImportError::BadFilename(filename.to_string()))
    }
}

/// A branch, tag or commit: letters, digits, `.`, `_`, `-`, `/` (as in `refs/pr/1`), no `..`.
pub fn check_revision(revision: &str) -> Result<(), ImportError> {
    let ok = !revision.is_empty()
        && revision.len() <= REVISION_CHARS_MAX
        && !revision.contains("..")
        && !revision.starts_with('/')
        && revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ImportError::BadRevision(revision.to_string()))
    }
}

/// `X-Linked-Etag: "<sha256>"` on the hub's answer for an LFS file.
fn linked_sha256(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-linked-etag")?.to_str().ok()?;
    let value = value.trim_start_matches("W/").trim_matches('"');
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| value.to_ascii_lowercase())
}

fn linked_size(headers: &HeaderMap) -> Option<u64> {
    headers.get("x-linked-size")?.to_str().ok()?.parse().ok()
}

pub struct HfImporter {
    client: reqwest::Client,
    base: reqwest::Url,
    token: Option<SecretString>,
}

impl HfImporter {
    pub fn new(settings: HfSettings) -> Result<Self, ImportError> {
        let base = reqwest::Url::parse(&settings.base_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| {
                ImportError::Store(BlobError::Config(format!(
                    "hub base URL '{}' is not an http(s) URL",
                    settings.base_url
                )))
            })?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .build()
            .map_err(ImportError::Transport)?;
        Ok(Self {
            client,
            base,
            token: settings.token,
        })
    }

    /// The download URL of `source` (after checking it).
    pub fn resolve_url(&self, source: &HfSource) -> Result<reqwest::Url, ImportError> {
        check_repo(&source.repo)?;
        check_filename(&source.filename)?;
        check_revision(source.revision())?;
        let mut url = self.base.clone();
        {
            let mut segments = url.path_segments_mut().map_err(|()| {
                ImportError::Store(BlobError::Config("hub base URL cannot have a path".into()))
            })?;
            segments.pop_if_empty();
            segments.extend(source.repo.split('/'));
            segments.push("resolve");
            // One segment: `refs/pr/1` travels as `refs%2Fpr%2F1`, as the hub's clients send it.
            segments.push(source.revision());
            segments.extend(source.filename.split('/'));
        }
        Ok(url)
    }

    fn same_origin(&self, url: &reqwest::Url) -> bool {
        url.origin() == self.base.origin()
    }

    /// Downloads `source` into `store`, at most `limit_bytes`.
    #[tracing::instrument(skip(self, store), fields(repo = %source.repo, filename = %source.filename))]
    pub async fn import(
        &self,
        store: &dyn BlobStore,
        source: &HfSource,
        limit_bytes: u64,
    ) -> Result<StoredBlob, ImportError> {
        let mut url = self.resolve_url(source)?;
        let mut expected_sha256 = None;
        let mut redirects = 0;
        let response = loop {
            let mut request = self.client.get(url.clone());
            if let (Some(token), true) = (&self.token, self.same_origin(&url)) {
                request =
                    request.header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()));
            }
            let response = request.send().await.map_err(ImportError::Transport)?;
            let headers = response.headers();
            expected_sha256 = linked_sha256(headers).or(expected_sha256);
            if linked_size(headers).is_some_and(|size| size > limit_bytes) {
                return Err(ImportError::TooLarge { limit_bytes });
            }
            if !response.status().is_redirection() {
                break response;
            }
            redirects += 1;
            if redirects > REDIRECTS_MAX {
                return Err(ImportError::TooManyRedirects);
            }
            let location = headers
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or(ImportError::Http {
                    status: response.status().as_u16(),
                })?;
            url = location;
        };
        let status = response.status();
        if !status.is_success() {
            // The hub answers 401 for a repo it does not show (missing or private, alike), and
            // says which in `X-Error-Code`.
            let code = response
                .headers()
                .get("x-error-code")
                .and_then(|c| c.to_str().ok())
                .unwrap_or_default();
            return Err(match (status, code) {
                (StatusCode::NOT_FOUND, _)
                | (_, "RepositoryNotFound" | "EntryNotFound" | "RevisionNotFound") => {
                    ImportError::NotFound {
                        repo: source.repo.clone(),
                        filename: source.filename.clone(),
                        revision: source.revision().to_string(),
                    }
                }
                (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => ImportError::Denied {
                    repo: source.repo.clone(),
                    status: status.as_u16(),
                },
                _ => ImportError::Http {
                    status: status.as_u16(),
                },
            });
        }
        if response
            .content_length()
            .is_some_and(|size| size > limit_bytes)
        {
            return Err(ImportError::TooLarge { limit_bytes });
        }
        let bytes = response.bytes_stream().map_err(std::io::Error::other);
        let mut reader = tokio_util::io::StreamReader::new(bytes);
        let blob = store.put(&mut reader, limit_bytes).await?;
        match expected_sha256 {
            Some(expected) if expected != blob.sha256 => Err(ImportError::HashMismatch {
                expected,
                actual: blob.sha256,
            }),
            _ => Ok(blob),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_owner_slash_name() {
        for good in [
            "openai-community/gpt2",
            "HuggingFaceTB/SmolLM2-135M",
            "a/b.c_d-e",
        ] {
            assert!(check_repo(good).is_ok(), "{good}");
        }
        for bad in [
            "gpt2", "a/b/c", "/a", "a/", "../b", "a/..", "a/b?x=1", "a/b#f", "a/b c", "a--b/c",
            "-a/b", "a/b.", "",
        ] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_names_stay_inside_the_repo() {
        for good in ["model.safetensors", "onnx/model.onnx", "a b.bin", "x?y.bin"] {
            assert!(check_filename(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\\b",
            "a\nb",
        ] {
            assert!(check_filename(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_url_encodes_every_segment() {
        let importer = HfImporter::new(HfSettings {
            base_url: "http://127.0.0.1:9/hub/".into(),
            ..HfSettings::default()
        })
        .unwrap();
        let mut source = HfSource::new("o/n", "dir/x?y #z.bin");
        assert_eq!(
            importer.resolve_url(&source).unwrap().as_str(),
            "http://127.0.0.1:9/hub/o/n/resolve/main/dir/x%3Fy%20%23z.bin"
        );
        source.revision = Some("refs/pr/1".into());
        assert_eq!(
            importer.resolve_url(&source).unwrap().as_str(),
            "http://127.0.0.1:9/hub/o/n/resolve/refs%2Fpr%2F1/dir/x%3Fy%20%23z.bin"
        );
        source.revision = Some("../main".into());
        assert!(matches!(
            importer.resolve_url(&source),
            Err(ImportError::BadRevision(_))
        ));
    }

    #[test]
    fn the_hub_s_sha256_is_read_from_the_linked_etag() {
        let mut headers = HeaderMap::new();
        let sha = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
        headers.insert("x-linked-etag", format!("\"{sha}\"").parse().unwrap());
        assert_eq!(linked_sha256(&headers).as_deref(), Some(sha));
        headers.insert("x-linked-etag", "\"abc\"".parse().unwrap());
        assert_eq!(linked_sha256(&headers), None);
    }
}

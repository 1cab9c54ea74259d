//! Fetching a model repository from the Hugging Face hub into the standard HF
//! cache (`models--ORG--NAME/{blobs,snapshots/<commit>,refs/<rev>}`, laid out as
//! `huggingface_hub` lays it out, so `hf:` sources and Python tools both find it).
//! Only ever run on the user's explicit request: nothing else in the crate fetches.
//!
//! A file is first written to `blobs/<etag>.incomplete`; a later attempt continues
//! it with an HTTP Range request, and only a complete file whose sha256 matches the
//! hub's is renamed into `blobs/` and linked from the snapshot.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::model_dir::{TEMPLATE_JINJA_FILE, WEIGHTS_FILE};
use crate::jobs::CancelToken;
use crate::util::fsx;
use crate::vision::clip::hf_cache_root;

/// The public hub; `HF_ENDPOINT` replaces it (a mirror, or a test server).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Attempts per file: a dropped connection is continued from the part file.
const ATTEMPTS: usize = 4;
/// How often a stalled transfer looks at the cancel token.
const CANCEL_POLL: Duration = Duration::from_millis(200);
/// A transfer with no byte for this long is dropped and continued.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where to fetch from and where to put it. The token lives only in memory.
#[derive(Clone)]
pub struct Hub {
    /// The hub's base URL, no trailing slash.
    pub endpoint: String,
    /// Sent as a bearer token (gated or private repositories); never written anywhere.
    pub token: Option<String>,
    /// The hub cache root (`.../huggingface/hub`).
    pub cache_root: PathBuf,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("cache_root", &self.cache_root)
            .finish()
    }
}

impl Hub {
    /// `HF_ENDPOINT`, `HF_TOKEN` and the cache root (`HF_HUB_CACHE`, `HF_HOME`, ...)
    /// as `huggingface_hub` reads them.
    pub fn from_env() -> Result<Hub, DownloadError> {
        Hub::from_vars(|name| std::env::var_os(name), dirs::home_dir())
    }

    /// [`Hub::from_env`] with the environment and home folder given, for tests.
    pub fn from_vars(
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
        home: Option<PathBuf>,
    ) -> Result<Hub, DownloadError> {
        let text = |name: &str| {
            env(name)
                .and_then(|v| v.into_string().ok())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let endpoint = text("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned())
            .trim_end_matches('/')
            .to_owned();
        let cache_root = hf_cache_root(None, &env, home).ok_or(DownloadError::NoCacheRoot)?;
        Ok(Hub {
            endpoint,
            token: text("HF_TOKEN"),
            cache_root,
        })
    }

    /// `<root>/models--ORG--NAME`.
    pub fn repo_folder(&self, repo: &str) -> PathBuf {
        self.cache_root
            .join(format!("models--{}", repo.replace('/', "--")))
    }
}

/// What failed while fetching, naming the URL or file.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error(
        "no Hugging Face cache folder is configured (HF_HUB_CACHE and HF_HOME are unset and there is no home directory)"
    )]
    NoCacheRoot,
    #[error("`{name}` is not a valid repository id (ORG/NAME) or revision")]
    BadName { name: String },
    #[error(
        "{url}: HTTP {status}: access refused; the repository is gated or private: accept its terms on the hub and set HF_TOKEN to a token that may read it{}",
        detail_suffix(detail)
    )]
    Unauthorized {
        url: String,
        status: u16,
        detail: Option<String>,
    },
    #[error(
        "{url}: HTTP 404: no such repository, revision or file ({what}){}",
        detail_suffix(detail)
    )]
    NotFound {
        url: String,
        what: String,
        detail: Option<String>,
    },
    #[error("{url}: HTTP {status}{}", detail_suffix(detail))]
    Status {
        url: String,
        status: u16,
        detail: Option<String>,
    },
    #[error("{url}: the request failed")]
    Network {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: no data for {}s; the transfer stalled", STALL_TIMEOUT.as_secs())]
    Stalled { url: String },
    #[error("{url}: the hub's answer is not what was expected: {detail}")]
    BadAnswer { url: String, detail: String },
    #[error(
        "{repo}@{revision} has no model files to fetch (config, tokenizer, template or weights)"
    )]
    NothingToFetch { repo: String, revision: String },
    #[error(
        "{file}: the downloaded bytes have sha256 {got}, the hub says {expected}; the file was discarded"
    )]
    Checksum {
        file: String,
        expected: String,
        got: String,
    },
    #[error("{file}: {got} bytes arrived, the hub says {expected}")]
    Size {
        file: String,
        expected: u64,
        got: u64,
    },
    #[error("{}: cannot write", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the download was cancelled; what arrived is kept and the next download continues it")]
    Cancelled,
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
}

fn detail_suffix(detail: &Option<String>) -> String {
    detail
        .as_deref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default()
}

/// Where a download stands, reported after every chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadProgress {
    /// The file being fetched (its name in the repository).
    pub file: String,
    pub file_done: u64,
    pub file_total: u64,
    /// All files together, counting files already in the cache as done.
    pub done: u64,
    pub total: u64,
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// `snapshots/<commit>`: the folder a `hf:` source resolves to.
    pub snapshot: PathBuf,
    pub commit: String,
    /// The files in the snapshot, in the repository's order.
    pub files: Vec<String>,
    /// Bytes fetched by this call (files already cached count nothing).
    pub fetched_bytes: u64,
    pub total_bytes: u64,
}

/// Whether a repository file belongs to what a Qwen3-VL folder needs: its
/// configs, tokenizer files and template at the top level, and the safetensors
/// weights with their index. READMEs, other formats and sub-folders are left.
pub fn is_model_file(name: &str) -> bool {
    if name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return false;
    }
    name.ends_with(".json")
        || name.ends_with(".safetensors")
        || name == TEMPLATE_JINJA_FILE
        || name == "merges.txt"
        || name == WEIGHTS_FILE
}

#[derive(Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(default)]
    lfs: Option<LfsInfo>,
}

#[derive(Deserialize)]
struct LfsInfo {
    sha256: Option<String>,
    size: Option<u64>,
}

/// One file to fetch, after its metadata request.
struct Planned {
    name: String,
    url: String,
    /// The blob's name in `blobs/`: the hub's ETag as `huggingface_hub` stores it.
    etag: String,
    size: Option<u64>,
    sha256: Option<String>,
}

/// Fetches `repo` at `revision` (default `main`) into the hub cache, skipping
/// files whose blob is already there, and returns the snapshot folder.
pub fn download(
    handle: &tokio::runtime::Handle,
    hub: &Hub,
    repo: &str,
    revision: Option<&str>,
    cancel: &CancelToken,
    progress: &(dyn Fn(&DownloadProgress) + Send + Sync),
) -> Result<Downloaded, DownloadError> {
    handle.block_on(download_async(hub, repo, revision, cancel, progress))
}

/// [`download`] inside an async context.
pub async fn download_async(
    hub: &Hub,
    repo: &str,
    revision: Option<&str>,
    cancel: &CancelToken,
    progress: &(dyn Fn(&DownloadProgress) + Send + Sync),
) -> Result<Downloaded, DownloadError> {
    let revision = revision.unwrap_or("main");
    check_repo_id(repo)?;
    check_revision(revision)?;
    // reqwest is built without a bundled crypto provider; ring is the one this
    // crate ships. Installing twice is harmless (the second call just fails).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .user_agent(concat!("echo-workbench/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(DownloadError::Client)?;
    // Metadata must be read from the hub's own answer, not from the storage
    // server a large file redirects to (which knows nothing of the repository).
    let no_redirect = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("echo-workbench/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(DownloadError::Client)?;
    let auth = |req: reqwest::RequestBuilder| match &hub.token {
        Some(token) => req.bearer_auth(token),
        None => req,
    };

    let info_url = format!(
        "{}/api/models/{repo}/revision/{}",
        hub.endpoint,
        encode_revision(revision)
    );
    let answer = send(auth(client.get(&info_url)), &info_url, cancel).await?;
    let answer = check_status(answer, &info_url, &format!("{repo}@{revision}"))?;
    let body = read_body(answer, &info_url, cancel).await?;
    let info: RepoInfo = serde_json::from_slice(&body).map_err(|e| DownloadError::BadAnswer {
        url: info_url.clone(),
        detail: e.to_string(),
    })?;
    let mut commit = info.sha.clone();

    let mut plan = Vec::new();
    for sibling in info.siblings.iter().filter(|s| is_model_file(&s.rfilename)) {
        let rev_for_files = commit.as_deref().unwrap_or(revision);
        let url = format!(
            "{}/{repo}/resolve/{}/{}",
            hub.endpoint,
            encode_revision(rev_for_files),
            sibling.rfilename
        );
        let answer = head_on_hub(&no_redirect, hub, &url, &sibling.rfilename, cancel).await?;
        let headers = answer.headers();
        if commit.is_none() {
            commit = header_text(headers, "x-repo-commit");
        }
        let etag = header_text(headers, "x-linked-etag")
            .or_else(|| header_text(headers, header::ETAG.as_str()))
            .map(|e| normalize_etag(&e))
            .ok_or_else(|| DownloadError::BadAnswer {
                url: url.clone(),
                detail: "no ETag header".into(),
            })?;
        if !is_safe_name(&etag) {
            return Err(DownloadError::BadAnswer {
                url,
                detail: format!("the ETag `{etag}` cannot name a file"),
            });
        }
        let size = header_text(headers, "x-linked-size")
            .and_then(|s| s.parse().ok())
            .or_else(|| sibling.lfs.as_ref().and_then(|l| l.size))
            .or_else(|| {
                (!answer.status().is_redirection())
                    .then(|| header_text(headers, header::CONTENT_LENGTH.as_str()))
                    .flatten()
                    .and_then(|s| s.parse().ok())
            });
        let sha256 = sibling
            .lfs
            .as_ref()
            .and_then(|l| l.sha256.clone())
            .or_else(|| is_sha256(&etag).then(|| etag.clone()))
            .map(|s| s.to_ascii_lowercase());
        plan.push(Planned {
            name: sibling.rfilename.clone(),
            url,
            etag,
            size,
            sha256,
        });
    }
    if plan.is_empty() {
        return Err(DownloadError::NothingToFetch {
            repo: repo.to_owned(),
            revision: revision.to_owned(),
        });
    }
    let commit = commit.ok_or_else(|| DownloadError::BadAnswer {
        url: info_url.clone(),
        detail: "neither `sha` nor an X-Repo-Commit header names the commit".into(),
    })?;
    if !is_safe_name(&commit) {
        return Err(DownloadError::BadAnswer {
            url: info_url,
            detail: format!("the commit `{commit}` cannot name a folder"),
        });
    }

    let repo_folder = hub.repo_folder(repo);
    let blobs = repo_folder.join("blobs");
    let snapshot = repo_folder.join("snapshots").join(&commit);
    for dir in [&blobs, &snapshot] {
        std::fs::create_dir_all(dir).map_err(|source| DownloadError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    let total: u64 = plan.iter().map(|p| p.size.unwrap_or(0)).sum();
    let mut done = 0u64;
    let mut fetched = 0u64;
    for file in &plan {
        let blob = blobs.join(&file.etag);
        if !blob.is_file() {
            let base = done;
            let report = |file_done: u64, file_total: u64| {
                progress(&DownloadProgress {
                    file: file.name.clone(),
                    file_done,
                    file_total,
                    done: base + file_done,
                    total: total.max(base + file_done),
                })
            };
            fetched += fetch_blob(&client, hub, file, &blob, cancel, &report).await?;
        }
        done += file.size.unwrap_or_else(|| file_len(&blob));
        link_into_snapshot(&blob, &snapshot, &file.name, &file.etag)?;
        progress(&DownloadProgress {
            file: file.name.clone(),
            file_done: file_len(&blob),
            file_total: file_len(&blob),
            done,
            total: total.max(done),
        });
    }
    if revision != commit {
        let refs = repo_folder.join("refs");
        let ref_file = refs.join(revision);
        let parent = ref_file.parent().unwrap_or(&refs).to_path_buf();
        std::fs::create_dir_all(&parent)
            .and_then(|()| fsx::atomic_write(&ref_file, commit.as_bytes()))
            .map_err(|source| DownloadError::Io {
                path: ref_file.clone(),
                source,
            })?;
    }
    Ok(Downloaded {
        snapshot,
        commit,
        files: plan.into_iter().map(|p| p.name).collect(),
        fetched_bytes: fetched,
        total_bytes: total,
    })
}

/// Fetches one file into `blob` through `<blob>.incomplete`, continuing what an
/// earlier attempt left; returns the bytes that came over the network.
async fn fetch_blob(
    client: &reqwest::Client,
    hub: &Hub,
    file: &Planned,
    blob: &Path,
    cancel: &CancelToken,
    report: &(dyn Fn(u64, u64) + Sync),
) -> Result<u64, DownloadError> {
    let part = blob.with_file_name(format!("{}.incomplete", file.etag));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DownloadError::Io { path, source }
    };
    let mut fetched = 0u64;
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        if cancel.is_cancelled() {
            return Err(DownloadError::Cancelled);
        }
        let have = file_len(&part);
        if file.size.is_some_and(|size| have > size) {
            std::fs::remove_file(&part).map_err(io(&part))?;
            continue;
        }
        let mut req = client.get(&file.url);
        if let Some(token) = &hub.token {
            req = req.bearer_auth(token);
        }
        if have > 0 && file.size != Some(have) {
            req = req.header(header::RANGE, format!("bytes={have}-"));
        }
        let complete_already = have > 0 && file.size == Some(have);
        if !complete_already {
            let answer = match send(req, &file.url, cancel).await {
                Ok(answer) => answer,
                Err(e @ DownloadError::Network { .. }) => {
                    last_error = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if answer.status() == StatusCode::RANGE_NOT_SATISFIABLE {
                // The part file does not belong to this blob any more: start over.
                std::fs::remove_file(&part).map_err(io(&part))?;
                continue;
            }
            let mut answer = check_status(answer, &file.url, &file.name)?;
            let resumed = answer.status() == StatusCode::PARTIAL_CONTENT;
            if resumed && range_start(answer.headers()) != Some(have) {
                // Bytes from elsewhere in the file would corrupt the part: start over.
                drop(answer);
                std::fs::remove_file(&part).map_err(io(&part))?;
                continue;
            }
            let mut out = fsx::open_regular_for_write(
                &part,
                std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(resumed)
                    .truncate(!resumed),
            )
            .map_err(io(&part))?;
            let mut written = if resumed { have } else { 0 };
            let file_total = file
                .size
                .or_else(|| answer.content_length().map(|n| n + written))
                .unwrap_or(0);
            report(written, file_total);
            let outcome = loop {
                match next_chunk(&mut answer, &file.url, cancel).await {
                    Ok(Some(bytes)) => {
                        out.write_all(&bytes).map_err(io(&part))?;
                        written += bytes.len() as u64;
                        fetched += bytes.len() as u64;
                        report(written, file_total.max(written));
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            out.sync_all().map_err(io(&part))?;
            drop(out);
            match outcome {
                Ok(()) => {}
                Err(e @ (DownloadError::Network { .. } | DownloadError::Stalled { .. })) => {
                    last_error = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        let got_len = file_len(&part);
        if let Some(expected) = file.size
            && got_len != expected
        {
            if got_len < expected {
                // The server ended the body early without an error: continue it.
                last_error = Some(DownloadError::Size {
                    file: file.name.clone(),
                    expected,
                    got: got_len,
                });
                continue;
            }
            std::fs::remove_file(&part).map_err(io(&part))?;
            return Err(DownloadError::Size {
                file: file.name.clone(),
                expected,
                got: got_len,
            });
        }
        if let Some(expected) = &file.sha256 {
            let got = sha256_of(&part).map_err(io(&part))?;
            if &got != expected {
                std::fs::remove_file(&part).map_err(io(&part))?;
                return Err(DownloadError::Checksum {
                    file: file.name.clone(),
                    expected: expected.clone(),
                    got,
                });
            }
        }
        fsx::rename_durable(&part, blob).map_err(io(blob))?;
        return Ok(fetched);
    }
    Err(last_error.unwrap_or(DownloadError::Size {
        file: file.name.clone(),
        expected: file.size.unwrap_or(0),
        got: file_len(&part),
    }))
}

/// The metadata request for one file. A redirect to another host (the storage
/// server of a large file) is where the hub's own headers are; a relative one (a
/// renamed repository) is followed, as `huggingface_hub` does.
async fn head_on_hub(
    client: &reqwest::Client,
    hub: &Hub,
    url: &str,
    name: &str,
    cancel: &CancelToken,
) -> Result<reqwest::Response, DownloadError> {
    let mut current = url.to_owned();
    for _ in 0..5 {
        let mut req = client.head(&current);
        if let Some(token) = &hub.token {
            req = req.bearer_auth(token);
        }
        let answer = send(req, &current, cancel).await?;
        let answer = check_redirect_or_status(answer, &current, name)?;
        let headers = answer.headers();
        let has_etag = header_text(headers, "x-linked-etag").is_some()
            || header_text(headers, header::ETAG.as_str()).is_some();
        let relative = answer
            .status()
            .is_redirection()
            .then(|| header_text(headers, header::LOCATION.as_str()))
            .flatten()
            .filter(|location| {
                !has_etag && location.starts_with('/') && !location.starts_with("//")
            });
        let Some(location) = relative else {
            return Ok(answer);
        };
        current = reqwest::Url::parse(&current)
            .and_then(|base| base.join(&location))
            .map_err(|e| DownloadError::BadAnswer {
                url: current.clone(),
                detail: format!("redirect to `{location}`: {e}"),
            })?
            .to_string();
    }
    Err(DownloadError::BadAnswer {
        url: url.to_owned(),
        detail: "too many redirects".into(),
    })
}

/// `snapshots/<commit>/<name>` pointing at the blob, as `huggingface_hub` makes
/// it: a relative symlink, or a copy where symlinks are not allowed.
fn link_into_snapshot(
    blob: &Path,
    snapshot: &Path,
    name: &str,
    etag: &str,
) -> Result<(), DownloadError> {
    let link = snapshot.join(name);
    let io = |source| DownloadError::Io {
        path: link.clone(),
        source,
    };
    let staged = snapshot.join(format!(".{name}.linking"));
    let _ = std::fs::remove_file(&staged);
    #[cfg(unix)]
    let made = std::os::unix::fs::symlink(Path::new("../../blobs").join(etag), &staged);
    #[cfg(not(unix))]
    let made = {
        let _ = etag;
        std::fs::copy(blob, &staged).map(|_| ())
    };
    if made.is_err() {
        std::fs::copy(blob, &staged).map_err(io)?;
    }
    fsx::rename_durable(&staged, &link).map_err(io)
}

async fn send(
    req: reqwest::RequestBuilder,
    url: &str,
    cancel: &CancelToken,
) -> Result<reqwest::Response, DownloadError> {
    let fut = req.send();
    tokio::pin!(fut);
    loop {
        if cancel.is_cancelled() {
            return Err(DownloadError::Cancelled);
        }
        match tokio::time::timeout(CANCEL_POLL, &mut fut).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(source)) => {
                return Err(DownloadError::Network {
                    url: url.to_owned(),
                    source,
                });
            }
            Err(_) => {}
        }
    }
}

/// The next piece of the body; `None` at its end. Looks at the cancel token
/// while waiting, so Cancel works on a stalled connection too.
async fn next_chunk(
    answer: &mut reqwest::Response,
    url: &str,
    cancel: &CancelToken,
) -> Result<Option<bytes::Bytes>, DownloadError> {
    let started = std::time::Instant::now();
    let fut = answer.chunk();
    tokio::pin!(fut);
    loop {
        if cancel.is_cancelled() {
            return Err(DownloadError::Cancelled);
        }
        match tokio::time::timeout(CANCEL_POLL, &mut fut).await {
            Ok(Ok(chunk)) => return Ok(chunk),
            Ok(Err(source)) => {
                return Err(DownloadError::Network {
                    url: url.to_owned(),
                    source,
                });
            }
            Err(_) if started.elapsed() > STALL_TIMEOUT => {
                return Err(DownloadError::Stalled {
                    url: url.to_owned(),
                });
            }
            Err(_) => {}
        }
    }
}

async fn read_body(
    mut answer: reqwest::Response,
    url: &str,
    cancel: &CancelToken,
) -> Result<Vec<u8>, DownloadError> {
    let mut body = Vec::new();
    while let Some(chunk) = next_chunk(&mut answer, url, cancel).await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The hub's error answers: its `X-Error-Message` (or `X-Error-Code`) says more.
fn check_status(
    answer: reqwest::Response,
    url: &str,
    what: &str,
) -> Result<reqwest::Response, DownloadError> {
    let status = answer.status();
    if status.is_success() {
        return Ok(answer);
    }
    Err(status_error(answer.headers(), status, url, what))
}

fn check_redirect_or_status(
    answer: reqwest::Response,
    url: &str,
    what: &str,
) -> Result<reqwest::Response, DownloadError> {
    if answer.status().is_redirection() {
        return Ok(answer);
    }
    check_status(answer, url, what)
}

fn status_error(headers: &HeaderMap, status: StatusCode, url: &str, what: &str) -> DownloadError {
    let detail =
        header_text(headers, "x-error-message").or_else(|| header_text(headers, "x-error-code"));
    let url = url.to_owned();
    match status.as_u16() {
        401 | 403 => DownloadError::Unauthorized {
            url,
            status: status.as_u16(),
            detail,
        },
        404 => DownloadError::NotFound {
            url,
            what: what.to_owned(),
            detail,
        },
        other => DownloadError::Status {
            url,
            status: other,
            detail,
        },
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)?
        .to_str()
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The first byte of a 206 answer: `Content-Range: bytes START-END/TOTAL`.
fn range_start(headers: &HeaderMap) -> Option<u64> {
    header_text(headers, header::CONTENT_RANGE.as_str())?
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// `W/"abc"` and `"abc"` are both stored as `abc`, as `huggingface_hub` does.
fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A name the hub gave us that becomes one path component.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_repo_id(repo: &str) -> Result<(), DownloadError> {
    let parts: Vec<&str> = repo.split('/').collect();
    let ok = parts.len() == 2 && parts.iter().all(|p| is_safe_name(p));
    ok.then_some(()).ok_or_else(|| DownloadError::BadName {
        name: repo.to_owned(),
    })
}

/// Branch names may hold `/` (`refs/pr/1`); no part may climb out of `refs/`.
fn check_revision(revision: &str) -> Result<(), DownloadError> {
    let ok = revision.split('/').all(is_safe_name);
    ok.then_some(()).ok_or_else(|| DownloadError::BadName {
        name: revision.to_owned(),
    })
}

/// A revision as one URL path segment (`refs/pr/1` becomes `refs%2Fpr%2F1`).
fn encode_revision(revision: &str) -> String {
    revision.replace('/', "%2F")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_a_model_folder_needs() {
        for name in [
            "config.json",
            "tokenizer.json",
            "chat_template.jinja",
            "model-00001-of-00002.safetensors",
            "model.safetensors.index.json",
            "merges.txt",
        ] {
            assert!(is_model_file(name), "{name}");
        }
        for name in [
            "README.md",
            ".gitattributes",
            "onnx/model.onnx",
            "sub/config.json",
            "pytorch_model.bin",
        ] {
            assert!(!is_model_file(name), "{name}");
        }
    }

    #[test]
    fn hub_reads_endpoint_token_and_cache_from_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let hub = Hub::from_vars(env(&[]), Some(PathBuf::from("home"))).unwrap();
        assert_eq!(hub.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(hub.token, None);
        assert_eq!(hub.cache_root, Path::new("home/.cache/huggingface/hub"));
        let hub = Hub::from_vars(
            env(&[
                ("HF_ENDPOINT", "http://mirror/"),
                ("HF_HOME", "hf"),
                ("HF_TOKEN", "t"),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(hub.endpoint, "http://mirror");
        assert_eq!(hub.token.as_deref(), Some("t"));
        assert_eq!(hub.cache_root, Path::new("hf/hub"));
        assert!(
            !format!("{hub:?}").contains("\"t\""),
            "the token is never printed"
        );
        assert!(matches!(
            Hub::from_vars(env(&[]), None),
            Err(DownloadError::NoCacheRoot)
        ));
    }

    #[test]
    fn names_from_the_hub_cannot_leave_the_cache() {
        assert!(check_repo_id("Qwen/Qwen3-VL-2B-Instruct").is_ok());
        for bad in ["Qwen", "../x", "a/b/c", "a/..", "a/b c"] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
        assert!(check_revision("refs/pr/1").is_ok());
        assert!(check_revision("../main").is_err());
        assert!(!is_safe_name(".."));
        assert!(!is_safe_name("a/b"));
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_RANGE,
            "bytes 1000-1999/2000".parse().unwrap(),
        );
        assert_eq!(range_start(&headers), Some(1000));
        assert!(is_sha256(&"a".repeat(64)));
        assert!(!is_sha256(&"a".repeat(40)));
    }
}

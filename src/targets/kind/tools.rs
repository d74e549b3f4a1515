//! Pinned external CLIs for the kind target: `kind` and `istioctl`.
//!
//! The versions live here and nowhere else ([`KIND_VERSION`], [`ISTIO_VERSION`],
//! [`ISTIO_PREVIOUS`]). [`ensure`] returns the path of an executable of exactly the
//! requested version:
//!
//! 1. A cached copy at `<cache_dir>/<tool>-<version>/<tool>` is used as is, without any
//!    network access.
//! 2. With `--offline` ([`ToolOptions::offline`]) the tool may also come from `PATH`,
//!    but only when it reports the requested version; nothing is ever downloaded.
//! 3. Otherwise the published sha256 checksum file is fetched first, then the release
//!    asset is streamed into a temporary file in the cache directory while it is
//!    hashed. A digest that differs from the published one is refused and the download
//!    is deleted. `istioctl` is extracted from its `.tar.gz`; entries with absolute
//!    paths or `..` make the whole archive refused. The executable is made `0755` and
//!    renamed into place atomically, under a per-tool `flock` so that concurrent
//!    processes download once.
//!
//! Every network operation has a timeout (connect [`CONNECT_TIMEOUT`], a whole
//! download [`DOWNLOAD_TIMEOUT`]); connection errors and HTTP 5xx are retried up to
//! [`MAX_ATTEMPTS`] times with backoff, other HTTP errors are reported at once.
//!
//! reqwest is built with `rustls-no-provider`: the process must install a rustls
//! crypto provider before the first client is built. [`install_crypto_provider`] does
//! so (ring, as kube uses) and [`ensure`] calls it too, so callers cannot forget it.
//! Certificates are checked by `rustls-platform-verifier`, which on Linux loads the
//! system roots (`/etc/ssl/certs` from Debian's `ca-certificates`, or `SSL_CERT_FILE`).

use std::ffi::OsStr;
use std::fmt;
use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// kind release used by the kind target.
///
/// v0.31.0 (Dec 2025) defaults to Kubernetes 1.35, which both [`ISTIO_VERSION`]
/// (1.30: Kubernetes 1.32–1.36) and [`ISTIO_PREVIOUS`] (1.29: 1.30–1.35) support
/// (the ranges: `ISTIO_KUBERNETES` in config.rs).
/// Newer kind releases exist (v0.32.0, v0.33.0); bump only together with a node image
/// that both Istio versions support.
pub const KIND_VERSION: &str = "v0.31.0";
/// Default Istio (and `istioctl`) version.
pub const ISTIO_VERSION: &str = "1.30.3";
/// The previous Istio minor (its newest patch), exercised by nightly CI.
pub const ISTIO_PREVIOUS: &str = "1.29.6";

/// Where kind publishes its release binaries.
pub const KIND_BASE: &str = "https://github.com/kubernetes-sigs/kind/releases/download";
/// Where Istio publishes its release archives.
pub const ISTIO_BASE: &str = "https://github.com/istio/istio/releases/download";

/// Connect timeout of every request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound of a whole download (one attempt), including the body.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Upper bound of fetching a checksum file (one attempt).
pub const CHECKSUM_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection that delivers nothing for this long is dropped (and retried).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts per request; only connection errors and HTTP 5xx are retried.
pub const MAX_ATTEMPTS: u32 = 3;
/// Delay before the second attempt; doubled for each further one.
const BACKOFF: Duration = Duration::from_millis(500);
/// How long to wait for another process that holds the download lock.
const LOCK_WAIT: Duration = Duration::from_secs(10 * 60);
/// Timeout for `kind version` / `istioctl version` when probing `PATH`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Installs ring as the process-wide rustls crypto provider. Idempotent: a provider
/// that is already installed (by an earlier call or by another library) is kept.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An external CLI the harness manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tool {
    Kind,
    Istioctl,
}

impl Tool {
    /// The executable's name (also the cache directory prefix).
    pub fn name(self) -> &'static str {
        match self {
            Tool::Kind => "kind",
            Tool::Istioctl => "istioctl",
        }
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tool at one version for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSpec {
    pub tool: Tool,
    /// kind: with a leading `v` (`v0.31.0`); istioctl: without (`1.30.3`).
    pub version: String,
    /// `linux` or `darwin` (Istio's `osx` is derived in [`ToolSpec::url`]).
    pub os: &'static str,
    /// `amd64` or `arm64`.
    pub arch: &'static str,
}

/// Release download locations; tests point both at a local server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub kind: String,
    pub istio: String,
}

impl Default for Base {
    fn default() -> Self {
        Base {
            kind: KIND_BASE.to_string(),
            istio: ISTIO_BASE.to_string(),
        }
    }
}

/// How [`ensure`] may obtain a tool.
#[derive(Debug, Clone)]
pub struct ToolOptions {
    /// Use only what is cached or on `PATH`; never download.
    pub offline: bool,
    /// Root of the tool cache (see [`default_cache_dir`]).
    pub cache_dir: PathBuf,
    pub base: Base,
    /// Show a progress bar when stderr is a terminal (else log a line at start and end).
    pub show_progress: bool,
}

impl ToolOptions {
    /// Options with the default cache dir and the official release locations.
    pub fn new(offline: bool) -> Self {
        ToolOptions {
            offline,
            cache_dir: default_cache_dir(),
            base: Base::default(),
            show_progress: true,
        }
    }
}

/// `<user cache dir>/meshcheck/tools` (`~/.cache/meshcheck/tools` on Linux,
/// `~/Library/Caches/meshcheck/tools` on macOS); the system temp dir when the user has
/// no cache dir.
pub fn default_cache_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("meshcheck")
        .join("tools")
}

/// The release naming of this machine: `(os, arch)` as kind names them (`linux`,
/// `darwin`; `amd64`, `arm64`). Other platforms pass through unchanged, and
/// [`ensure`] refuses to download for them.
pub fn host_platform() -> (&'static str, &'static str) {
    let os = match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    (os, arch)
}

impl ToolSpec {
    /// kind at `version` for this machine; a missing leading `v` is added.
    pub fn kind(version: impl Into<String>) -> Self {
        let (os, arch) = host_platform();
        Self::for_platform(Tool::Kind, version, os, arch)
    }

    /// istioctl at `version` for this machine; a leading `v` is dropped.
    pub fn istioctl(version: impl Into<String>) -> Self {
        let (os, arch) = host_platform();
        Self::for_platform(Tool::Istioctl, version, os, arch)
    }

    /// A spec for an explicit platform (pure; used for URL tests and cross checks).
    pub fn for_platform(
        tool: Tool,
        version: impl Into<String>,
        os: &'static str,
        arch: &'static str,
    ) -> Self {
        let version = version.into();
        let version = match tool {
            Tool::Kind if !version.starts_with('v') => format!("v{version}"),
            Tool::Istioctl => version.trim_start_matches('v').to_string(),
            Tool::Kind => version,
        };
        ToolSpec {
            tool,
            version,
            os,
            arch,
        }
    }

    /// The release asset's file name.
    pub fn asset_name(&self) -> String {
        match self.tool {
            Tool::Kind => format!("kind-{}-{}", self.os, self.arch),
            Tool::Istioctl => {
                let platform = match (self.os, self.arch) {
                    ("darwin", "amd64") => "osx".to_string(),
                    ("darwin", arch) => format!("osx-{arch}"),
                    (os, arch) => format!("{os}-{arch}"),
                };
                format!("istioctl-{}-{platform}.tar.gz", self.version)
            }
        }
    }

    /// The URL of the binary (kind) or archive (istioctl).
    pub fn url(&self, base: &Base) -> String {
        let root = match self.tool {
            Tool::Kind => &base.kind,
            Tool::Istioctl => &base.istio,
        };
        format!(
            "{}/{}/{}",
            root.trim_end_matches('/'),
            self.version,
            self.asset_name()
        )
    }

    /// The URL of the published sha256 of [`ToolSpec::url`].
    pub fn checksum_url(&self, base: &Base) -> String {
        match self.tool {
            Tool::Kind => format!("{}.sha256sum", self.url(base)),
            Tool::Istioctl => format!("{}.sha256", self.url(base)),
        }
    }

    /// `<cache_dir>/<tool>-<version>`.
    pub fn install_dir(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(format!("{}-{}", self.tool, self.version))
    }

    /// `<cache_dir>/<tool>-<version>/<tool>`: where [`ensure`] puts the executable.
    pub fn install_path(&self, cache_dir: &Path) -> PathBuf {
        self.install_dir(cache_dir).join(self.tool.name())
    }

    fn supported_platform(&self) -> bool {
        matches!(self.os, "linux" | "darwin") && matches!(self.arch, "amd64" | "arm64")
    }
}

/// Why a tool could not be provided. Each message names the tool, the version, the URL
/// or path involved, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(
        "{tool} {version}: no release is published for {os}/{arch}; \
         install {tool} {version} yourself, put it on PATH and use --offline"
    )]
    UnsupportedPlatform {
        tool: Tool,
        version: String,
        os: String,
        arch: String,
    },
    #[error(
        "{tool} {version}: nothing cached at {path} and none on PATH, and --offline forbids \
         downloading {url}; run once without --offline to fill the cache, or put \
         {tool} {version} on PATH"
    )]
    OfflineMissing {
        tool: Tool,
        version: String,
        path: PathBuf,
        url: String,
    },
    #[error(
        "{tool} {version}: nothing cached at {cached}; {tool} on PATH ({path}) is version \
         {found}, and --offline forbids downloading {url}; run once without --offline, \
         or put {tool} {version} first on PATH"
    )]
    OfflineWrongVersion {
        tool: Tool,
        version: String,
        cached: PathBuf,
        path: PathBuf,
        found: String,
        url: String,
    },
    #[error(
        "{tool} {version}: GET {url} answered HTTP {status}; check that {tool} {version} \
         is published for this platform (or fix the pinned version)"
    )]
    Http {
        tool: Tool,
        version: String,
        url: String,
        status: u16,
    },
    #[error(
        "{tool} {version}: could not download {url} after {attempts} attempt(s): {reason}; \
         check the network or proxy settings, or use --offline with a cached copy"
    )]
    Network {
        tool: Tool,
        version: String,
        url: String,
        attempts: u32,
        reason: String,
        #[source]
        source: reqwest::Error,
    },
    #[error(
        "{tool} {version}: checksum file {url} is malformed ({reason}); expected a \
         64-digit hex sha256 as its first word; refusing to download without it"
    )]
    MalformedChecksum {
        tool: Tool,
        version: String,
        url: String,
        reason: String,
    },
    #[error(
        "{tool} {version}: {url} has sha256 {actual} but the published checksum is \
         {expected}; refusing to use it. The download was deleted; retry later, and \
         report it if it persists"
    )]
    ChecksumMismatch {
        tool: Tool,
        version: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{tool} {version}: archive {url} refused: {reason}")]
    Archive {
        tool: Tool,
        version: String,
        url: String,
        reason: String,
    },
    #[error(
        "{tool} {version}: timed out after {waited:?} waiting for another process to \
         finish downloading (lock {path}); remove the lock file if no meshcheck is running"
    )]
    LockTimeout {
        tool: Tool,
        version: String,
        path: PathBuf,
        waited: Duration,
    },
    #[error("{tool} {version}: cannot {action} {path}: {source}; check the cache dir's permissions and free space")]
    Io {
        tool: Tool,
        version: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} {version}: cannot build the HTTP client: {source}")]
    Client {
        tool: Tool,
        version: String,
        #[source]
        source: reqwest::Error,
    },
}

impl ToolError {
    fn io(spec: &ToolSpec, action: &'static str, path: &Path, source: std::io::Error) -> Self {
        ToolError::Io {
            tool: spec.tool,
            version: spec.version.clone(),
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Returns the path of an executable `spec.tool` at `spec.version`: cached, on `PATH`
/// (offline only), or downloaded and verified against its published sha256.
pub async fn ensure(spec: &ToolSpec, opts: &ToolOptions) -> Result<PathBuf, ToolError> {
    let dest = spec.install_path(&opts.cache_dir);
    if is_executable(&dest) {
        return Ok(dest);
    }
    if opts.offline {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        return offline_lookup(spec, opts, &path_var).await;
    }
    if !spec.supported_platform() {
        return Err(ToolError::UnsupportedPlatform {
            tool: spec.tool,
            version: spec.version.clone(),
            os: spec.os.to_string(),
            arch: spec.arch.to_string(),
        });
    }

    let cache_dir = &opts.cache_dir;
    tokio::fs::create_dir_all(cache_dir)
        .await
        .map_err(|e| ToolError::io(spec, "create", cache_dir, e))?;
    let _lock = FileLock::acquire(spec, cache_dir).await?;
    // Another process may have installed it while we waited for the lock.
    if is_executable(&dest) {
        tracing::debug!(tool = %spec.tool, version = %spec.version, "installed by another process");
        return Ok(dest);
    }
    install(spec, opts, &dest).await?;
    Ok(dest)
}

// ----------------------------------------------------------------------------------
// Offline

async fn offline_lookup(
    spec: &ToolSpec,
    opts: &ToolOptions,
    path_var: &OsStr,
) -> Result<PathBuf, ToolError> {
    let cached = spec.install_path(&opts.cache_dir);
    let url = spec.url(&opts.base);
    let Some(found_path) = find_on_path(spec.tool.name(), path_var) else {
        return Err(ToolError::OfflineMissing {
            tool: spec.tool,
            version: spec.version.clone(),
            path: cached,
            url,
        });
    };
    let found = probe_version(spec, &found_path).await;
    match found {
        Ok(output) if version_matches(spec, &output) => {
            tracing::debug!(tool = %spec.tool, path = %found_path.display(), "using the copy on PATH");
            Ok(found_path)
        }
        other => {
            let found = match other {
                Ok(output) => describe_version_output(&output),
                Err(why) => format!("unknown ({why})"),
            };
            Err(ToolError::OfflineWrongVersion {
                tool: spec.tool,
                version: spec.version.clone(),
                cached,
                path: found_path,
                found,
                url,
            })
        }
    }
}

fn find_on_path(name: &str, path_var: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

async fn probe_version(spec: &ToolSpec, exe: &Path) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(exe);
    match spec.tool {
        Tool::Kind => cmd.arg("version"),
        Tool::Istioctl => cmd.args(["version", "--remote=false", "--short"]),
    };
    cmd.stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(PROBE_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("`{} version` timed out", spec.tool))?
        .map_err(|e| format!("cannot run it: {e}"))?;
    if !output.status.success() {
        return Err(format!("`{} version` failed: {}", spec.tool, output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// kind: `kind v0.31.0 go1.25.5 linux/amd64` has the version as a word.
/// istioctl: a line that is the version, optionally after `client version:`.
fn version_matches(spec: &ToolSpec, output: &str) -> bool {
    match spec.tool {
        Tool::Kind => output.split_whitespace().any(|w| w == spec.version),
        Tool::Istioctl => output.lines().any(|line| {
            let line = line.trim();
            let line = line.strip_prefix("client version:").unwrap_or(line).trim();
            line == spec.version
        }),
    }
}

fn describe_version_output(output: &str) -> String {
    let first = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let first: String = first.trim().chars().take(120).collect();
    if first.is_empty() {
        "unknown (it printed nothing)".to_string()
    } else {
        format!("'{first}'")
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

// ----------------------------------------------------------------------------------
// Locking

/// An exclusive `flock` on `<cache_dir>/.locks/<tool>-<version>.lock`, released on drop
/// (closing the descriptor releases it, also when the process dies).
struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    async fn acquire(spec: &ToolSpec, cache_dir: &Path) -> Result<Self, ToolError> {
        let dir = cache_dir.join(".locks");
        std::fs::create_dir_all(&dir).map_err(|e| ToolError::io(spec, "create", &dir, e))?;
        let path = dir.join(format!("{}-{}.lock", spec.tool, spec.version));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ToolError::io(spec, "open", &path, e))?;
        let start = Instant::now();
        let mut told = false;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(code) if code == libc::EWOULDBLOCK || code == libc::EINTR => {}
                _ => return Err(ToolError::io(spec, "lock", &path, err)),
            }
            if start.elapsed() >= LOCK_WAIT {
                return Err(ToolError::LockTimeout {
                    tool: spec.tool,
                    version: spec.version.clone(),
                    path,
                    waited: LOCK_WAIT,
                });
            }
            if !told {
                tracing::info!(
                    tool = %spec.tool,
                    version = %spec.version,
                    "waiting for another process downloading {} {}",
                    spec.tool,
                    spec.version
                );
                told = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ----------------------------------------------------------------------------------
// Download

fn client(spec: &ToolSpec) -> Result<reqwest::Client, ToolError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("meshcheck/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| ToolError::Client {
            tool: spec.tool,
            version: spec.version.clone(),
            source,
        })
}

async fn install(spec: &ToolSpec, opts: &ToolOptions, dest: &Path) -> Result<(), ToolError> {
    let client = client(spec)?;
    let checksum_url = spec.checksum_url(&opts.base);
    let url = spec.url(&opts.base);

    let text = fetch_text(spec, &client, &checksum_url).await?;
    let expected = parse_checksum(&text).map_err(|reason| ToolError::MalformedChecksum {
        tool: spec.tool,
        version: spec.version.clone(),
        url: checksum_url.clone(),
        reason,
    })?;

    let (download, actual) = download(spec, opts, &client, &url).await?;
    if actual != expected {
        drop(download); // deletes the temporary file
        return Err(ToolError::ChecksumMismatch {
            tool: spec.tool,
            version: spec.version.clone(),
            url,
            expected,
            actual,
        });
    }

    let exe = match spec.tool {
        Tool::Kind => download,
        Tool::Istioctl => {
            let cache_dir = opts.cache_dir.clone();
            let spec2 = spec.clone();
            let url2 = url.clone();
            tokio::task::spawn_blocking(move || {
                extract_istioctl(&spec2, &url2, download.path(), &cache_dir)
            })
            .await
            .map_err(|e| ToolError::Archive {
                tool: spec.tool,
                version: spec.version.clone(),
                url: url.clone(),
                reason: format!("extraction task failed: {e}"),
            })??
        }
    };

    exe.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| ToolError::io(spec, "chmod", exe.path(), e))?;
    let dir = spec.install_dir(&opts.cache_dir);
    std::fs::create_dir_all(&dir).map_err(|e| ToolError::io(spec, "create", &dir, e))?;
    exe.persist(dest)
        .map_err(|e| ToolError::io(spec, "rename into", dest, e.error))?;
    tracing::info!(tool = %spec.tool, version = %spec.version, path = %dest.display(), "installed");
    Ok(())
}

/// The first whitespace-separated word, which must be 64 hex digits; lowercased.
fn parse_checksum(text: &str) -> Result<String, String> {
    let Some(token) = text.split_whitespace().next() else {
        return Err("it is empty".to_string());
    };
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        let shown: String = token.chars().take(80).collect();
        return Err(format!("first word '{shown}' is not 64 hex digits"));
    }
    Ok(token.to_ascii_lowercase())
}

/// What one attempt of a request came to.
enum Attempt<T> {
    Done(T),
    /// Worth another attempt: a connection error or HTTP 5xx.
    Retry(ToolError),
    Fatal(ToolError),
}

async fn with_retries<T, F, Fut>(mut attempt: F) -> Result<T, ToolError>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Attempt<T>>,
{
    let mut n = 1;
    loop {
        match attempt(n).await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fatal(e) => return Err(e),
            Attempt::Retry(e) if n >= MAX_ATTEMPTS => return Err(e),
            Attempt::Retry(e) => {
                let delay = BACKOFF * 2u32.pow(n - 1);
                tracing::warn!("{e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                n += 1;
            }
        }
    }
}

fn network_error(spec: &ToolSpec, url: &str, attempts: u32, source: reqwest::Error) -> ToolError {
    ToolError::Network {
        tool: spec.tool,
        version: spec.version.clone(),
        url: url.to_string(),
        attempts,
        reason: error_chain(&source),
        source,
    }
}

/// Connection-level failures (refused, reset, dropped mid-body, connect timeout) are
/// worth retrying; an exhausted overall timeout and anything else are not.
fn retryable(e: &reqwest::Error) -> bool {
    e.is_connect() || ((e.is_request() || e.is_body()) && !e.is_timeout())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        cur = s.source();
    }
    text
}

/// Sends GET `url`; maps HTTP status errors (5xx retryable).
async fn get(
    spec: &ToolSpec,
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    n: u32,
) -> Attempt<reqwest::Response> {
    let resp = match client.get(url).timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) if retryable(&e) => return Attempt::Retry(network_error(spec, url, n, e)),
        Err(e) => return Attempt::Fatal(network_error(spec, url, n, e)),
    };
    let status = resp.status();
    if status.is_success() {
        return Attempt::Done(resp);
    }
    let err = ToolError::Http {
        tool: spec.tool,
        version: spec.version.clone(),
        url: url.to_string(),
        status: status.as_u16(),
    };
    if status.is_server_error() {
        Attempt::Retry(err)
    } else {
        Attempt::Fatal(err)
    }
}

async fn fetch_text(
    spec: &ToolSpec,
    client: &reqwest::Client,
    url: &str,
) -> Result<String, ToolError> {
    with_retries(|n| async move {
        let resp = match get(spec, client, url, CHECKSUM_TIMEOUT, n).await {
            Attempt::Done(r) => r,
            Attempt::Retry(e) => return Attempt::Retry(e),
            Attempt::Fatal(e) => return Attempt::Fatal(e),
        };
        match resp.bytes().await {
            Ok(b) if b.len() > 64 * 1024 => Attempt::Fatal(ToolError::MalformedChecksum {
                tool: spec.tool,
                version: spec.version.clone(),
                url: url.to_string(),
                reason: format!("it is {} bytes long", b.len()),
            }),
            Ok(b) => Attempt::Done(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if retryable(&e) => Attempt::Retry(network_error(spec, url, n, e)),
            Err(e) => Attempt::Fatal(network_error(spec, url, n, e)),
        }
    })
    .await
}

/// Streams `url` into a temporary file in the cache dir; returns it and its sha256.
async fn download(
    spec: &ToolSpec,
    opts: &ToolOptions,
    client: &reqwest::Client,
    url: &str,
) -> Result<(tempfile::NamedTempFile, String), ToolError> {
    with_retries(|n| async move {
        let started = Instant::now();
        let mut resp = match get(spec, client, url, DOWNLOAD_TIMEOUT, n).await {
            Attempt::Done(r) => r,
            Attempt::Retry(e) => return Attempt::Retry(e),
            Attempt::Fatal(e) => return Attempt::Fatal(e),
        };
        let tmp = match temp_file(spec, &opts.cache_dir, "download") {
            Ok(t) => t,
            Err(e) => return Attempt::Fatal(e),
        };
        let std_file = match tmp.as_file().try_clone() {
            Ok(f) => f,
            Err(e) => return Attempt::Fatal(ToolError::io(spec, "open", tmp.path(), e)),
        };
        let mut file = tokio::fs::File::from_std(std_file);
        let progress = Progress::start(spec, url, resp.content_length(), opts.show_progress);
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    hasher.update(&chunk);
                    if let Err(e) = file.write_all(&chunk).await {
                        progress.abandon();
                        return Attempt::Fatal(ToolError::io(spec, "write", tmp.path(), e));
                    }
                    total += chunk.len() as u64;
                    progress.inc(chunk.len() as u64);
                }
                Ok(None) => break,
                Err(e) => {
                    progress.abandon();
                    let retry = retryable(&e);
                    let err = network_error(spec, url, n, e);
                    return if retry {
                        Attempt::Retry(err)
                    } else {
                        Attempt::Fatal(err)
                    };
                }
            }
        }
        if let Err(e) = async {
            file.flush().await?;
            file.sync_all().await
        }
        .await
        {
            progress.abandon();
            return Attempt::Fatal(ToolError::io(spec, "write", tmp.path(), e));
        }
        progress.finish(total, started.elapsed());
        Attempt::Done((tmp, hex(&hasher.finalize())))
    })
    .await
}

fn temp_file(
    spec: &ToolSpec,
    cache_dir: &Path,
    what: &str,
) -> Result<tempfile::NamedTempFile, ToolError> {
    tempfile::Builder::new()
        .prefix(&format!(".{}-{}.{what}.", spec.tool, spec.version))
        .suffix(".part")
        .tempfile_in(cache_dir)
        .map_err(|e| ToolError::io(spec, "create a temporary file in", cache_dir, e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Extracts the regular file `istioctl` at the archive's root into a temporary file in
/// the cache dir. Any absolute path or `..` anywhere in the archive refuses it.
fn extract_istioctl(
    spec: &ToolSpec,
    url: &str,
    archive: &Path,
    cache_dir: &Path,
) -> Result<tempfile::NamedTempFile, ToolError> {
    let refuse = |reason: String| ToolError::Archive {
        tool: spec.tool,
        version: spec.version.clone(),
        url: url.to_string(),
        reason,
    };
    let file = std::fs::File::open(archive).map_err(|e| ToolError::io(spec, "open", archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let entries = tar
        .entries()
        .map_err(|e| refuse(format!("not a tar.gz: {e}")))?;
    let mut out: Option<tempfile::NamedTempFile> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| refuse(format!("corrupt tar.gz: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| refuse(format!("bad entry name: {e}")))?
            .into_owned();
        let mut names = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(n) => names.push(n.to_owned()),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse(format!(
                        "entry '{}' escapes the archive (absolute path or '..')",
                        path.display()
                    )));
                }
            }
        }
        if names.len() != 1 || names[0] != OsStr::new("istioctl") {
            continue;
        }
        if !entry.header().entry_type().is_file() {
            return Err(refuse(format!(
                "'istioctl' is a {:?}, not a regular file",
                entry.header().entry_type()
            )));
        }
        if out.is_some() {
            return Err(refuse("it holds 'istioctl' twice".to_string()));
        }
        let mut tmp = temp_file(spec, cache_dir, "extract")?;
        std::io::copy(&mut entry, tmp.as_file_mut())
            .map_err(|e| refuse(format!("reading istioctl: {e}")))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| ToolError::io(spec, "write", tmp.path(), e))?;
        out = Some(tmp);
    }
    out.ok_or_else(|| refuse("it has no 'istioctl' at its root".to_string()))
}

/// A progress bar on a terminal, else a log line at the start and the end.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn start(spec: &ToolSpec, url: &str, len: Option<u64>, show: bool) -> Self {
        if show && std::io::stderr().is_terminal() {
            let style = match len {
                Some(_) => indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .map(|s| s.progress_chars("=> ")),
                None => indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} {bytes} {bytes_per_sec}",
                ),
            }
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            let bar = match len {
                Some(l) => indicatif::ProgressBar::new(l),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_style(style);
            bar.set_message(format!("downloading {} {}", spec.tool, spec.version));
            Progress { bar: Some(bar) }
        } else {
            let size = len.map(|l| format!(" ({l} bytes)")).unwrap_or_default();
            tracing::info!(
                "downloading {} {} from {url}{size}",
                spec.tool,
                spec.version
            );
            Progress { bar: None }
        }
    }

    fn inc(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    fn finish(&self, total: u64, took: Duration) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => tracing::info!("downloaded {total} bytes in {:.1}s", took.as_secs_f64()),
        }
    }

    fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

// ----------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    // ---- a tiny HTTP/1.1 server serving canned responses from memory ----

    /// path -> responses, served in order; the last one repeats.
    type Routes = HashMap<String, Vec<(u16, Vec<u8>)>>;

    #[derive(Clone, Default)]
    struct Server {
        routes: Arc<Mutex<Routes>>,
        hits: Arc<Mutex<HashMap<String, usize>>>,
        /// Delay before every response (to make requests overlap).
        delay: Arc<Mutex<Duration>>,
        base: String,
    }

    impl Server {
        async fn start() -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = Server {
                base: format!("http://{addr}"),
                ..Default::default()
            };
            let s = server.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut sock, _)) = listener.accept().await else {
                        return;
                    };
                    let s = s.clone();
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut tmp = [0u8; 1024];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match sock.read(&mut tmp).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                            }
                        }
                        let head = String::from_utf8_lossy(&buf).into_owned();
                        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                        let (status, body) = s.respond(&path);
                        let delay = *s.delay.lock().unwrap();
                        tokio::time::sleep(delay).await;
                        let reason = match status {
                            200 => "OK",
                            404 => "Not Found",
                            _ => "Whatever",
                        };
                        let head = format!(
                            "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(&body).await;
                        let _ = sock.shutdown().await;
                    });
                }
            });
            server
        }

        fn respond(&self, path: &str) -> (u16, Vec<u8>) {
            *self
                .hits
                .lock()
                .unwrap()
                .entry(path.to_string())
                .or_default() += 1;
            let mut routes = self.routes.lock().unwrap();
            match routes.get_mut(path) {
                Some(list) if list.len() > 1 => list.remove(0),
                Some(list) => list[0].clone(),
                None => (404, b"not found".to_vec()),
            }
        }

        fn serve(&self, url: &str, status: u16, body: impl Into<Vec<u8>>) {
            self.serve_seq(url, vec![(status, body.into())]);
        }

        fn serve_seq(&self, url: &str, seq: Vec<(u16, Vec<u8>)>) {
            let path = url.strip_prefix(&self.base).expect("url on this server");
            self.routes.lock().unwrap().insert(path.to_string(), seq);
        }

        fn hits(&self, url: &str) -> usize {
            let path = url.strip_prefix(&self.base).unwrap();
            self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
        }

        fn total_hits(&self) -> usize {
            self.hits.lock().unwrap().values().sum()
        }

        fn base(&self) -> Base {
            Base {
                kind: format!("{}/kind", self.base),
                istio: format!("{}/istio", self.base),
            }
        }
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex(&Sha256::digest(data))
    }

    fn kind_spec() -> ToolSpec {
        ToolSpec::for_platform(Tool::Kind, KIND_VERSION, "linux", "amd64")
    }

    fn istioctl_spec() -> ToolSpec {
        ToolSpec::for_platform(Tool::Istioctl, ISTIO_VERSION, "linux", "amd64")
    }

    fn opts(server: &Server, cache: &Path) -> ToolOptions {
        ToolOptions {
            offline: false,
            cache_dir: cache.to_path_buf(),
            base: server.base(),
            show_progress: false,
        }
    }

    const KIND_BODY: &[u8] = b"#!/bin/sh\necho kind v0.31.0 go1.25 linux/amd64\n";

    /// Serves kind with a correct `.sha256sum`.
    fn serve_kind(server: &Server, spec: &ToolSpec) {
        let base = server.base();
        server.serve(&spec.url(&base), 200, KIND_BODY);
        let sum = format!("{}  {}\n", sha256_hex(KIND_BODY), spec.asset_name());
        server.serve(&spec.checksum_url(&base), 200, sum);
    }

    /// A tar.gz with the given (name, contents) entries, names written raw.
    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name like a hostile archive would.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn serve_istioctl(server: &Server, spec: &ToolSpec, archive: &[u8]) {
        let base = server.base();
        server.serve(&spec.url(&base), 200, archive.to_vec());
        let sum = format!("{}  {}\n", sha256_hex(archive), spec.asset_name());
        server.serve(&spec.checksum_url(&base), 200, sum);
    }

    /// Entries of the cache dir other than the lock directory.
    fn cache_entries(cache: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(cache)
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n != ".locks")
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    fn setup() -> tempfile::TempDir {
        install_crypto_provider();
        tempfile::tempdir().unwrap()
    }

    // ---- URLs ----

    #[test]
    fn urls_kind() {
        let base = Base::default();
        let cases = [
            ("linux", "amd64", "kind-linux-amd64"),
            ("linux", "arm64", "kind-linux-arm64"),
            ("darwin", "arm64", "kind-darwin-arm64"),
            ("darwin", "amd64", "kind-darwin-amd64"),
        ];
        for (os, arch, asset) in cases {
            let s = ToolSpec::for_platform(Tool::Kind, "v0.31.0", os, arch);
            let url = format!(
                "https://github.com/kubernetes-sigs/kind/releases/download/v0.31.0/{asset}"
            );
            assert_eq!(s.url(&base), url);
            assert_eq!(s.checksum_url(&base), format!("{url}.sha256sum"));
        }
    }

    #[test]
    fn urls_istioctl() {
        let base = Base::default();
        let cases = [
            ("linux", "amd64", "istioctl-1.30.3-linux-amd64.tar.gz"),
            ("linux", "arm64", "istioctl-1.30.3-linux-arm64.tar.gz"),
            ("darwin", "arm64", "istioctl-1.30.3-osx-arm64.tar.gz"),
            ("darwin", "amd64", "istioctl-1.30.3-osx.tar.gz"),
        ];
        for (os, arch, asset) in cases {
            let s = ToolSpec::for_platform(Tool::Istioctl, "1.30.3", os, arch);
            let url = format!("https://github.com/istio/istio/releases/download/1.30.3/{asset}");
            assert_eq!(s.url(&base), url);
            assert_eq!(s.checksum_url(&base), format!("{url}.sha256"));
        }
    }

    #[test]
    fn version_normalisation_and_paths() {
        let k = ToolSpec::for_platform(Tool::Kind, "0.31.0", "linux", "amd64");
        assert_eq!(k.version, "v0.31.0");
        let i = ToolSpec::for_platform(Tool::Istioctl, "v1.29.4", "linux", "amd64");
        assert_eq!(i.version, "1.29.4");
        assert_eq!(
            i.install_path(Path::new("/c")),
            PathBuf::from("/c/istioctl-1.29.4/istioctl")
        );
        let b = Base {
            kind: "http://x/".into(),
            istio: "http://y".into(),
        };
        assert_eq!(k.url(&b), "http://x/v0.31.0/kind-linux-amd64");
        let host = ToolSpec::kind(KIND_VERSION);
        assert_eq!(host.os, host_platform().0);
    }

    #[test]
    fn checksum_parsing() {
        let h = "A".repeat(64);
        assert_eq!(
            parse_checksum(&format!("{h}  kind-linux-amd64\n")).unwrap(),
            "a".repeat(64)
        );
        assert_eq!(
            parse_checksum(&format!("{}\n", "b".repeat(64))).unwrap(),
            "b".repeat(64)
        );
        assert!(parse_checksum("").is_err());
        assert!(parse_checksum("  \n").is_err());
        assert!(parse_checksum(&"a".repeat(63)).is_err());
        assert!(parse_checksum(&"g".repeat(64)).is_err());
        assert!(parse_checksum("<html>Not Found</html>").is_err());
    }

    #[test]
    fn version_output_matching() {
        let k = kind_spec();
        assert!(version_matches(&k, "kind v0.31.0 go1.25.5 linux/amd64\n"));
        assert!(!version_matches(
            &k,
            "kind v0.31.0-alpha go1.25.5 linux/amd64\n"
        ));
        assert!(!version_matches(&k, "kind v0.30.0 go1.24 linux/amd64\n"));
        let i = istioctl_spec();
        assert!(version_matches(&i, "1.30.3\n"));
        assert!(version_matches(&i, "client version: 1.30.3\n"));
        assert!(!version_matches(&i, "1.30.30\n"));
    }

    // ---- ensure() against the local server ----

    #[tokio::test]
    async fn kind_good_checksum_installs_executable() {
        let cache = setup();
        let server = Server::start().await;
        let spec = kind_spec();
        serve_kind(&server, &spec);
        let path = ensure(&spec, &opts(&server, cache.path())).await.unwrap();
        assert_eq!(path, cache.path().join("kind-v0.31.0/kind"));
        assert_eq!(std::fs::read(&path).unwrap(), KIND_BODY);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // No temporary files left behind.
        assert_eq!(
            cache_entries(cache.path()),
            vec!["kind-v0.31.0".to_string()]
        );
        let out = std::process::Command::new(&path).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("v0.31.0"));
    }

    #[tokio::test]
    async fn istioctl_good_checksum_extracts() {
        let cache = setup();
        let server = Server::start().await;
        let spec = istioctl_spec();
        let archive = tar_gz(&[("istioctl", b"#!/bin/sh\necho 1.30.3\n")]);
        serve_istioctl(&server, &spec, &archive);
        let path = ensure(&spec, &opts(&server, cache.path())).await.unwrap();
        assert_eq!(path, cache.path().join("istioctl-1.30.3/istioctl"));
        assert_eq!(std::fs::read(&path).unwrap(), b"#!/bin/sh\necho 1.30.3\n");
        assert!(is_executable(&path));
        assert_eq!(
            cache_entries(cache.path()),
            vec!["istioctl-1.30.3".to_string()]
        );
    }

    #[tokio::test]
    async fn istioctl_with_dot_slash_entry_and_other_files_extracts() {
        let cache = setup();
        let server = Server::start().await;
        let spec = istioctl_spec();
        let archive = tar_gz(&[("README", b"hi"), ("./istioctl", b"bin")]);
        serve_istioctl(&server, &spec, &archive);
        let path = ensure(&spec, &opts(&server, cache.path())).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"bin");
    }

    #[tokio::test]
    async fn bad_checksum_refused_and_nothing_cached() {
        let cache = setup();
        let server = Server::start().await;
        let spec = kind_spec();
        let base = server.base();
        server.serve(&spec.url(&base), 200, KIND_BODY);
        let wrong = "0".repeat(64);
        server.serve(
            &spec.checksum_url(&base),
            200,
            format!("{wrong}  kind-linux-amd64\n"),
        );
        let err = ensure(&spec, &opts(&server, cache.path()))
            .await
            .unwrap_err();
        match &err {
            ToolError::ChecksumMismatch {
                tool,
                url,
                expected,
                actual,
                ..
            } => {
                assert_eq!(*tool, Tool::Kind);
                assert_eq!(url, &spec.url(&base));
                assert_eq!(expected, &wrong);
                assert_eq!(actual, &sha256_hex(KIND_BODY));
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("refusing to use it"), "{msg}");
        assert!(msg.contains("v0.31.0"), "{msg}");
        assert!(
            cache_entries(cache.path()).is_empty(),
            "{:?}",
            cache_entries(cache.path())
        );
    }

    #[tokio::test]
    async fn istioctl_bad_checksum_refused() {
        let cache = setup();
        let server = Server::start().await;
        let spec = istioctl_spec();
        let base = server.base();
        server.serve(&spec.url(&base), 200, tar_gz(&[("istioctl", b"x")]));
        server.serve(
            &spec.checksum_url(&base),
            200,
            format!("{}\n", "f".repeat(64)),
        );
        let err = ensure(&spec, &opts(&server, cache.path()))
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::ChecksumMismatch { .. }), "{err:?}");
        assert!(cache_entries(cache.path()).is_empty());
    }

    #[tokio::test]
    async fn missing_asset_404_names_url() {
        let cache = setup();
        let server = Server::start().await;
        let spec = kind_spec();
        let base = server.base();
        // Only the checksum exists.
        server.serve(
            &spec.checksum_url(&base),
            200,
            format!("{}  kind-linux-amd64\n", sha256_hex(KIND_BODY)),
        );
        let err = ensure(&spec, &opts(&server, cache.path()))
            .await
            .unwrap_err();
        match &err {
            ToolError::Http { url, status, .. } => {
                assert_eq!(url, &spec.url(&base));
                assert_eq!(*status, 404);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains(&spec.url(&base)));
        assert!(err.to_string().contains("404"));
        // 404 is not retried.
        assert_eq!(server.hits(&spec.url(&base)), 1);
        assert!(cache_entries(cache.path()).is_empty());
    }

    #[tokio::test]
    async fn missing_checksum_file_is_an_error_and_asset_not_fetched() {
        let cache = setup();
        let server = Server::start().await;
        let spec = kind_spec();
        let base = server.base();
        server.serve(&spec.url(&base), 200, KIND_BODY);
        let err = ensure(&spec, &opts(&server, cache.path()))
            .await
            .unwrap_err();
        match &err {
            ToolError::Http {
                url, status: 404, ..
            } => assert_eq!(url, &spec.checksum_url(&base)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(server.hits(&spec.url(&base)), 0);
        assert!(cache_entries(cache.path()).is_empty());
    }

    #[tokio::test]
    async fn malformed_checksum_file_is_an_error() {
        let cache = setup();
        let server = Server::start().await;
        let spec = kind_spec();
        let base = server.base();
        server.serve(&spec.url(&base), 200, KIND_BODY);
        server.serve(&spec.checksum_url(&base), 200, "<html>oops</html>");
        let err = ensure(&spec, &opts(&server, cache.path()))
            .await
            .unwrap_err();
        match &err {
            ToolError::MalformedChecksum { url, .. } => assert_eq!(url, &spec.checksum_url(&base)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(server.hits(&spec.url(&base)), 0);
        assert!(cache_entries(cache.path()).is_empty());
    }

    #[tokio::test]
    async fn tar_with_parent_dir_entry_refused() {
        let cache = setup();
        let server = Server::start().await;
        let spec = istioctl_spec();
        let archive = tar_gz(&[("../evil", b"pwned"), ("istioctl", b"bin")]);
        serve_istioctl(&server, &spec, &archive);
        let err = ensure(&spec, &opts(&server, cache.path()))
            .await
            .unwrap_err();
        match &err {
            ToolError::Archive { reason, .. } => assert!(reason.contains("../evil"), "{reason}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            cache_entries(cache.path()).is_empty(),
            "{:?}",
            cache_entries(cache.path())
        );
        assert!(!cache.path().parent().unwrap().join("evil").exists());
    }

    #[tokio::test]
    async fn tar_with_absolute_entry_refused() {
        let cache = setup();
        let server = Server::start().await;
        let spec = istioctl_spec();
        let archive = tar_gz(&[("/tmp/evil", b"pwned"), ("istioctl", b"bin")]);
        serve_istioctl(&server, &spec, &archive);
        let err = ensure(&spec, &opts(&server, cache.path()))
            .await
            .unwrap_err();
        assert!(matches!(err, ToolError::Archive { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn tar_without_istioctl_refused() {
        let cache = setup();
        let server = Server::start().await;
        let spec = istioctl_spec();
        let archive = tar_gz(&[("bin/istioctl", b"bin")]);
        serve_istioctl(&server, &spec, &archive);
        let err = ensure(&spec, &opts(&server, cache.path()))
            .await
            .unwrap_err();
        match &err {
            ToolError::Archive { reason, .. } => {
                assert!(reason.contains("no 'istioctl'"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(cache_entries(cache.path()).is_empty());
    }

    #[tokio::test]
    async fn cache_hit_makes_no_request() {
        let cache = setup();
        let server = Server::start().await;
        let spec = kind_spec();
        serve_kind(&server, &spec);
        let o = opts(&server, cache.path());
        let first = ensure(&spec, &o).await.unwrap();
        let after_first = server.total_hits();
        assert_eq!(after_first, 2);
        let second = ensure(&spec, &o).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(server.total_hits(), after_first);
    }

    #[tokio::test]
    async fn server_errors_are_retried() {
        let cache = setup();
        let server = Server::start().await;
        let spec = kind_spec();
        serve_kind(&server, &spec);
        let base = server.base();
        server.serve_seq(
            &spec.url(&base),
            vec![(503, b"busy".to_vec()), (200, KIND_BODY.to_vec())],
        );
        let path = ensure(&spec, &opts(&server, cache.path())).await.unwrap();
        assert!(is_executable(&path));
        assert_eq!(server.hits(&spec.url(&base)), 2);
    }

    #[tokio::test]
    async fn persistent_server_error_gives_up_after_max_attempts() {
        let cache = setup();
        let server = Server::start().await;
        let spec = kind_spec();
        let base = server.base();
        server.serve(&spec.checksum_url(&base), 500, "boom");
        let err = ensure(&spec, &opts(&server, cache.path()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ToolError::Http { status: 500, .. }),
            "{err:?}"
        );
        assert_eq!(
            server.hits(&spec.checksum_url(&base)),
            MAX_ATTEMPTS as usize
        );
    }

    #[tokio::test]
    async fn connection_refused_is_a_network_error() {
        let cache = setup();
        // Bind then drop, so the port is (very likely) closed.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let o = ToolOptions {
            offline: false,
            cache_dir: cache.path().to_path_buf(),
            base: Base {
                kind: format!("http://{addr}"),
                istio: format!("http://{addr}"),
            },
            show_progress: false,
        };
        let spec = kind_spec();
        let err = ensure(&spec, &o).await.unwrap_err();
        match &err {
            ToolError::Network { url, attempts, .. } => {
                assert_eq!(url, &spec.checksum_url(&o.base));
                assert_eq!(*attempts, MAX_ATTEMPTS);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_ensure_downloads_once() {
        let cache = setup();
        let server = Server::start().await;
        let spec = istioctl_spec();
        let archive = tar_gz(&[("istioctl", &vec![7u8; 512 * 1024])]);
        serve_istioctl(&server, &spec, &archive);
        // Slow responses, so the second task certainly waits on the lock.
        *server.delay.lock().unwrap() = Duration::from_millis(300);
        let o = opts(&server, cache.path());
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let (spec, o) = (spec.clone(), o.clone());
                tokio::spawn(async move { ensure(&spec, &o).await })
            })
            .collect();
        let mut paths = Vec::new();
        for t in tasks {
            paths.push(t.await.unwrap().unwrap());
        }
        assert_eq!(paths[0], paths[1]);
        assert_eq!(server.hits(&spec.url(&server.base())), 1);
        assert_eq!(server.hits(&spec.checksum_url(&server.base())), 1);
        assert_eq!(
            cache_entries(cache.path()),
            vec!["istioctl-1.30.3".to_string()]
        );
    }

    // ---- offline ----

    fn fake_tool(dir: &Path, name: &str, output: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\necho '{output}'\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn offline_opts(cache: &Path) -> ToolOptions {
        ToolOptions {
            offline: true,
            cache_dir: cache.to_path_buf(),
            base: Base::default(),
            show_progress: false,
        }
    }

    #[tokio::test]
    async fn offline_empty_cache_is_an_error() {
        let cache = setup();
        let empty_path = tempfile::tempdir().unwrap();
        let spec = kind_spec();
        let o = offline_opts(cache.path());
        let err = offline_lookup(&spec, &o, empty_path.path().as_os_str())
            .await
            .unwrap_err();
        match &err {
            ToolError::OfflineMissing { path, .. } => {
                assert_eq!(path, &spec.install_path(cache.path()))
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("--offline") && msg.contains("v0.31.0"),
            "{msg}"
        );
        assert!(cache_entries(cache.path()).is_empty());
    }

    #[tokio::test]
    async fn offline_with_cache_uses_it_without_network() {
        let cache = setup();
        let server = Server::start().await;
        let spec = kind_spec();
        serve_kind(&server, &spec);
        let online = ensure(&spec, &opts(&server, cache.path())).await.unwrap();
        let hits = server.total_hits();
        let mut o = opts(&server, cache.path());
        o.offline = true;
        let offline = ensure(&spec, &o).await.unwrap();
        assert_eq!(online, offline);
        assert_eq!(server.total_hits(), hits);
    }

    #[tokio::test]
    async fn offline_never_downloads() {
        let cache = setup();
        let server = Server::start().await;
        let spec = ToolSpec::for_platform(Tool::Kind, "v0.0.1-never", "linux", "amd64");
        serve_kind(&server, &spec);
        let mut o = opts(&server, cache.path());
        o.offline = true;
        // Whatever PATH holds, it will not be kind v0.0.1-never.
        assert!(ensure(&spec, &o).await.is_err());
        assert_eq!(server.total_hits(), 0);
    }

    #[tokio::test]
    async fn offline_uses_matching_tool_on_path() {
        let cache = setup();
        let bin = tempfile::tempdir().unwrap();
        fake_tool(bin.path(), "kind", "kind v0.31.0 go1.25.5 linux/amd64");
        fake_tool(bin.path(), "istioctl", "1.30.3");
        let path_var = std::env::join_paths([Path::new("/nonexistent"), bin.path()]).unwrap();
        let o = offline_opts(cache.path());
        let k = offline_lookup(&kind_spec(), &o, &path_var).await.unwrap();
        assert_eq!(k, bin.path().join("kind"));
        let i = offline_lookup(&istioctl_spec(), &o, &path_var)
            .await
            .unwrap();
        assert_eq!(i, bin.path().join("istioctl"));
    }

    #[tokio::test]
    async fn offline_wrong_version_on_path_is_an_error() {
        let cache = setup();
        let bin = tempfile::tempdir().unwrap();
        fake_tool(bin.path(), "istioctl", "1.28.0");
        let o = offline_opts(cache.path());
        let err = offline_lookup(&istioctl_spec(), &o, bin.path().as_os_str())
            .await
            .unwrap_err();
        match &err {
            ToolError::OfflineWrongVersion { found, path, .. } => {
                assert_eq!(found, "'1.28.0'");
                assert_eq!(path, &bin.path().join("istioctl"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("1.28.0") && msg.contains("1.30.3") && msg.contains("--offline"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn unsupported_platform_is_refused_before_network() {
        let cache = setup();
        let server = Server::start().await;
        let spec = ToolSpec::for_platform(Tool::Kind, KIND_VERSION, "windows", "amd64");
        let err = ensure(&spec, &opts(&server, cache.path()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ToolError::UnsupportedPlatform { .. }),
            "{err:?}"
        );
        assert_eq!(server.total_hits(), 0);
    }

    #[tokio::test]
    #[ignore = "downloads from GitHub"]
    async fn real_download_from_github() {
        let cache = setup();
        let o = ToolOptions {
            offline: false,
            cache_dir: cache.path().to_path_buf(),
            base: Base::default(),
            show_progress: true,
        };
        let kind = ensure(&ToolSpec::kind(KIND_VERSION), &o).await.unwrap();
        let out = std::process::Command::new(&kind)
            .arg("version")
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains(KIND_VERSION));
        let istioctl = ensure(&ToolSpec::istioctl(ISTIO_VERSION), &o)
            .await
            .unwrap();
        let spec = ToolSpec::istioctl(ISTIO_VERSION);
        let out = probe_version(&spec, &istioctl).await.unwrap();
        assert!(version_matches(&spec, &out), "{out}");
    }
}

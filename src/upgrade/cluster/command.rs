//! A command of an upgrade step (istioctl, or the user's `--upgrade-cmd`): its output
//! streamed to stderr as it comes and kept for the report, bounded in time, in a
//! process group of its own that is stopped whole when the step ends, times out or
//! is dropped (nothing it started keeps running), and by Ctrl-C with meshcheck's
//! other tools.

use crate::targets::local::procs;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// How long a stopped command gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
/// How long the output may still be read once the command exited.
const DRAIN: Duration = Duration::from_secs(5);
/// How much of the output is kept (its end).
const KEEP: usize = 64 * 1024;

/// How a command that ran ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub success: bool,
    /// `exit status: 1`, `signal: 9 (SIGKILL)`.
    pub status: String,
    /// stdout and stderr interleaved as they came (the last 64 KiB).
    pub output: String,
    /// stdout alone (the last 64 KiB).
    pub stdout: String,
}

/// Why a command did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFinished {
    /// It could not be started.
    Spawn(String),
    /// It ran longer than allowed and was stopped; what it printed.
    Timeout { waited: Duration, output: String },
}

impl std::fmt::Display for NotFinished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotFinished::Spawn(why) => f.write_str(why),
            NotFinished::Timeout { waited, output } => write!(
                f,
                "did not finish within {waited:?} and was stopped{}",
                tail(output, 20)
            ),
        }
    }
}

/// The last `n` lines of `output`, as a block under a message (empty if none).
pub fn tail(output: &str, n: usize) -> String {
    let lines: Vec<&str> = output.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "\n--- last lines of its output ---\n{}",
        lines[lines.len().saturating_sub(n)..].join("\n")
    )
}

/// Kills a process group when dropped (the step ended, failed, or was cancelled).
struct GroupKill(Option<u32>);

impl GroupKill {
    fn signal(&self, sig: libc::c_int) {
        if let Some(g) = self.0 {
            // SAFETY: plain syscall on the group the command we started leads.
            unsafe {
                libc::killpg(g as libc::pid_t, sig);
            }
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

/// Runs `cmd` (program, args and environment set by the caller), printing each
/// line of its output to stderr under `prefix`, for at most `timeout`.
pub async fn run_streamed(
    mut cmd: tokio::process::Command,
    shown: &str,
    prefix: &str,
    timeout: Duration,
) -> Result<Finished, NotFinished> {
    crate::targets::cluster::as_tool(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| NotFinished::Spawn(format!("cannot run `{shown}`: {e}")))?;
    let group = GroupKill(child.id());
    // Ctrl-C stops the group (procs::stop_all) before the cleanups run.
    let _registered = child.id().map(procs::register_group);
    let output = Arc::new(Mutex::new(String::new()));
    let stdout = Arc::new(Mutex::new(String::new()));
    let readers = [
        child
            .stdout
            .take()
            .map(|o| stream(o, prefix, vec![output.clone(), stdout.clone()])),
        child
            .stderr
            .take()
            .map(|e| stream(e, prefix, vec![output.clone()])),
    ];
    let status = tokio::time::timeout(timeout, child.wait()).await;
    let status = match status {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(NotFinished::Spawn(format!(
                "`{shown}` could not be waited for: {e}"
            )))
        }
        Err(_) => {
            group.signal(libc::SIGTERM);
            if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                group.signal(libc::SIGKILL);
                let _ = child.wait().await;
            }
            drop(group);
            drain(readers).await;
            return Err(NotFinished::Timeout {
                waited: timeout,
                output: kept(&output),
            });
        }
    };
    // What the command left behind in its group goes with it.
    drop(group);
    drain(readers).await;
    Ok(Finished {
        success: status.success(),
        status: status.to_string(),
        output: kept(&output),
        stdout: kept(&stdout),
    })
}

fn kept(output: &Mutex<String>) -> String {
    output.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

async fn drain(readers: [Option<tokio::task::JoinHandle<()>>; 2]) {
    for r in readers.into_iter().flatten() {
        let abort = r.abort_handle();
        if tokio::time::timeout(DRAIN, r).await.is_err() {
            abort.abort();
        }
    }
}

/// Reads lines from `r` until EOF: each printed under `prefix`, kept in `into`.
fn stream<R: AsyncRead + Unpin + Send + 'static>(
    r: R,
    prefix: &str,
    into: Vec<Arc<Mutex<String>>>,
) -> tokio::task::JoinHandle<()> {
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("  {prefix}| {line}");
            for buf in &into {
                keep(&mut buf.lock().unwrap_or_else(|e| e.into_inner()), &line);
            }
        }
    })
}

/// Appends `line` to `out`, keeping its last [`KEEP`] bytes.
fn keep(out: &mut String, line: &str) {
    out.push_str(line);
    out.push('\n');
    if out.len() > KEEP {
        let cut = out.len() - KEEP;
        let cut = (cut..out.len())
            .find(|&i| out.is_char_boundary(i))
            .unwrap_or(out.len());
        out.drain(..cut);
    }
}

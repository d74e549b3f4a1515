//! The local target's stub fork server (`meshcheck-stub --fork-server`, see
//! [`crate::stub::fork_server`]): one process that forks the app process of every
//! pod. meshcheck writes the pods on its stdin; a reader thread takes its reports:
//! each pod's pid (registered in [`procs`] as the pod's app process) and each exit
//! (so a killed pod is named "was killed (SIGKILL)" as an own child would be).

use super::procs;
use crate::stub::fork_server::{PodRequest, Report};
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the server said of one request: the pod's name and pid, or its name and why
/// it could not start.
type Start = Result<(String, u32), (String, String)>;

/// A running fork server. Dropping it closes its stdin: it kills its pods and exits.
pub struct Forker {
    stdin: std::process::ChildStdin,
    starts: mpsc::Receiver<Start>,
    log: std::path::PathBuf,
}

impl Forker {
    /// Starts `stub_command --fork-server WORKDIR` as process `stub fork server` of
    /// `owner` (stderr to `log`). WORKDIR only names the run in `ps` (the pods'
    /// processes show the same command line).
    pub fn start(
        owner: u64,
        stub_command: &[OsString],
        workdir: &Path,
        log: &Path,
    ) -> std::io::Result<Forker> {
        let (prog, args) = stub_command
            .split_first()
            .ok_or_else(|| std::io::Error::other("no stub command"))?;
        let mut cmd = Command::new(prog);
        cmd.args(args).arg("--fork-server").arg(workdir);
        let (_, stdin, stdout) = procs::spawn_piped(owner, "stub fork server", &mut cmd, log)?;
        let (tx, starts) = mpsc::channel();
        std::thread::Builder::new()
            .name("meshcheck-forker".into())
            .spawn(move || read_reports(std::io::BufReader::new(stdout), tx))?;
        Ok(Forker {
            stdin,
            starts,
            log: log.to_path_buf(),
        })
    }

    /// Starts every pod of `reqs`, registering each as its `name` of `owner`. Stops at
    /// the first that cannot start (its name and why), or after `within`.
    pub fn start_pods(
        &mut self,
        owner: u64,
        reqs: &[PodRequest],
        within: Duration,
    ) -> Result<Vec<u32>, (String, std::io::Error)> {
        let mut lines = Vec::new();
        for r in reqs {
            serde_json::to_writer(&mut lines, r)
                .map_err(|e| (r.name.clone(), std::io::Error::other(e)))?;
            lines.push(b'\n');
        }
        let server_gone = |name: &str, e: std::io::Error| {
            (
                name.to_string(),
                std::io::Error::other(format!(
                    "the stub fork server is gone ({e}); its log: {}",
                    self.log.display()
                )),
            )
        };
        let first = reqs.first().map_or("", |r| r.name.as_str());
        self.stdin
            .write_all(&lines)
            .and_then(|()| self.stdin.flush())
            .map_err(|e| server_gone(first, e))?;
        let deadline = Instant::now() + within;
        let mut pids = Vec::with_capacity(reqs.len());
        for r in reqs {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.starts.recv_timeout(left) {
                Ok(Ok((name, pid))) => {
                    procs::register_forked(owner, &name, pid, &r.log);
                    pids.push(pid);
                }
                Ok(Err((name, error))) => return Err((name, std::io::Error::other(error))),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err((
                        r.name.clone(),
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("the stub fork server did not start it within {within:?}"),
                        ),
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(server_gone(&r.name, std::io::Error::other("no reply")))
                }
            }
        }
        Ok(pids)
    }
}

/// The reader thread: starts go to `starts` (in request order), exits to the process
/// registry; at the end of the server's output every pod it started and had not seen
/// end is gone with it.
fn read_reports(out: impl BufRead, starts: mpsc::Sender<Start>) {
    let mut started = Vec::new();
    for line in out.lines() {
        let Ok(line) = line else { break };
        let Ok(report) = serde_json::from_str::<Report>(&line) else {
            tracing::warn!("stub fork server said something unreadable: {line}");
            continue;
        };
        match report {
            Report::Exited { pid, status } => procs::forked_exited(pid, status),
            Report::Started { name, pid } => {
                procs::forked_started(pid);
                started.push(pid);
                let _ = starts.send(Ok((name, pid)));
            }
            Report::Failed { name, error } => {
                let _ = starts.send(Err((name, error)));
            }
        }
    }
    procs::forked_server_gone(&started);
}

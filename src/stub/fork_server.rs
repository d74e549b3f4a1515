//! `meshcheck-stub --fork-server`: starts the stubs of many pods by fork, not exec.
//!
//! The local target asks for one pod per line on stdin ([`PodRequest`], JSON) and
//! reads what happened on stdout ([`Report`], JSON lines): the pid of each pod's
//! process, and later how it exited. Each pod is still a process of its own (its own
//! pid, process group, log, listeners, identity and environment), so killing one
//! pod's app kills that pod alone; only the cost differs. A fork of this small,
//! single-threaded process takes a fraction of a millisecond, where an exec of the
//! stub binary costs several (loading, relocation, runtime start) and dominated the
//! bring-up of a mesh of hundreds of pods.
//!
//! The server stays single-threaded (forking a threaded process is unsafe): it waits
//! with `poll` on stdin and a signalfd for SIGCHLD, SIGTERM and SIGINT. Its children
//! die with it (PR_SET_PDEATHSIG); when stdin closes (meshcheck is done or gone) or on
//! SIGTERM/SIGINT it kills and reaps them, then exits.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// One pod to start.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PodRequest {
    /// The process name in meshcheck's registry (`ns/pod app`), echoed in the report.
    pub name: String,
    pub listen: Vec<SocketAddr>,
    pub control: Option<PathBuf>,
    /// The pod's environment, set over the server's own (identity comes from here).
    pub env: Vec<(String, String)>,
    /// Where the pod's stdout and stderr go.
    pub log: PathBuf,
}

/// What the server says, one JSON line each.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The pod's process runs as `pid`.
    Started { name: String, pid: u32 },
    /// The pod could not be forked.
    Failed { name: String, error: String },
    /// Process `pid` ended; `status` is the raw wait status.
    Exited { pid: u32, status: i32 },
}

/// The variables a pod's environment replaces (a stale one must not leak from the
/// server's environment into a pod that does not set it).
const IDENTITY_VARS: [&str; 5] = [
    "SERVICE_NAME",
    "VERSION",
    "POD_NAME",
    "NAMESPACE",
    "LISTEN_ADDR",
];

#[cfg(target_os = "linux")]
pub use linux::run;

#[cfg(not(target_os = "linux"))]
pub fn run() -> std::process::ExitCode {
    eprintln!("meshcheck-stub: --fork-server needs Linux (signalfd, PR_SET_PDEATHSIG)");
    std::process::ExitCode::from(3)
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{PodRequest, Report, IDENTITY_VARS};
    use std::io::Write;

    /// Serves until stdin closes. Exit 3 when the server cannot set itself up.
    pub fn run() -> std::process::ExitCode {
        match serve() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meshcheck-stub --fork-server: {e}");
                std::process::ExitCode::from(3)
            }
        }
    }

    fn os_err(what: &str) -> String {
        format!("{what}: {}", std::io::Error::last_os_error())
    }

    /// SIGCHLD, SIGTERM and SIGINT blocked and readable from a signalfd; returns (fd,
    /// the old mask).
    fn signal_fd() -> Result<(libc::c_int, libc::sigset_t), String> {
        // SAFETY: sigset operations on local, initialised sets; plain syscalls.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
                return Err(os_err("blocking SIGCHLD"));
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
            if fd < 0 {
                return Err(os_err("signalfd"));
            }
            Ok((fd, old))
        }
    }

    fn say(r: &Report) {
        let mut out = std::io::stdout().lock();
        // Flushed at once: a forked child must not inherit buffered lines.
        let _ = serde_json::to_writer(&mut out, r);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }

    fn serve() -> Result<(), String> {
        let (sfd, old_mask) = signal_fd()?;
        let mut pending = Vec::<u8>::new();
        let mut children = Vec::<libc::pid_t>::new();
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: 0,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: sfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(os_err("poll"));
            }
            if fds[1].revents != 0 && reap(sfd, &mut children) {
                // Told to stop: the pods go first, so none is left to init.
                end_children(&children);
                return Ok(());
            }
            if fds[0].revents != 0 {
                let mut buf = [0u8; 65536];
                // SAFETY: reading into a local buffer of its length.
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    // meshcheck closed our stdin (done, or gone): the pods go too.
                    end_children(&children);
                    return Ok(());
                }
                pending.extend_from_slice(&buf[..n as usize]);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    if let Some(r) = start_pod(&line, sfd, &old_mask) {
                        if let Report::Started { pid, .. } = r {
                            children.push(pid as libc::pid_t);
                        }
                        say(&r);
                    }
                }
            }
        }
    }

    /// Drains the signalfd and reports every child that ended. Returns whether
    /// SIGTERM or SIGINT arrived.
    fn reap(sfd: libc::c_int, children: &mut Vec<libc::pid_t>) -> bool {
        let mut stop = false;
        // SAFETY: a plain C struct of integers; all zeroes is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading whole siginfo records into a struct of that size.
        while unsafe { libc::read(sfd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) }
            == size as isize
        {
            stop |= info.ssi_signo == libc::SIGTERM as u32 || info.ssi_signo == libc::SIGINT as u32;
        }
        loop {
            let mut status = 0;
            // SAFETY: plain syscall.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            children.retain(|&c| c != pid);
            say(&Report::Exited {
                pid: pid as u32,
                status,
            });
        }
        stop
    }

    /// SIGKILL to every pod's group, each reaped (a stub keeps nothing to flush: its
    /// output is written line by line).
    fn end_children(children: &[libc::pid_t]) {
        for &c in children {
            // SAFETY: each is our child and the leader of its own group (the pid too:
            // a pod just forked may not have made its group yet).
            unsafe {
                libc::killpg(c, libc::SIGKILL);
                libc::kill(c, libc::SIGKILL);
            }
        }
        for &c in children {
            let mut status = 0;
            // SAFETY: plain syscall on our own child; SIGKILL makes it return soon.
            unsafe {
                libc::waitpid(c, &mut status, 0);
            }
        }
    }

    /// Forks the pod of one request line; None for a blank line.
    fn start_pod(line: &[u8], sfd: libc::c_int, old_mask: &libc::sigset_t) -> Option<Report> {
        let text = String::from_utf8_lossy(line);
        if text.trim().is_empty() {
            return None;
        }
        let req: PodRequest = match serde_json::from_str(text.trim()) {
            Ok(r) => r,
            Err(e) => {
                return Some(Report::Failed {
                    name: String::new(),
                    error: format!("unreadable request: {e}"),
                })
            }
        };
        let server = std::process::id() as libc::pid_t;
        // SAFETY: this process is single-threaded (see the module docs), so the child
        // may run any code after fork.
        match unsafe { libc::fork() } {
            -1 => Some(Report::Failed {
                name: req.name,
                error: os_err("fork"),
            }),
            0 => {
                let code = be_the_pod(req, server, sfd, old_mask);
                // SAFETY: leave without running the server's exit handlers.
                unsafe { libc::_exit(code) }
            }
            pid => Some(Report::Started {
                name: req.name,
                pid: pid as u32,
            }),
        }
    }

    /// In the forked child: becomes the pod's stub. Returns its exit code.
    fn be_the_pod(
        req: PodRequest,
        server: libc::pid_t,
        sfd: libc::c_int,
        old_mask: &libc::sigset_t,
    ) -> i32 {
        if let Err(e) = detach(&req, server, sfd, old_mask) {
            eprintln!("meshcheck-stub: {e}");
            return 3;
        }
        for k in IDENTITY_VARS {
            std::env::remove_var(k);
        }
        for (k, v) in &req.env {
            std::env::set_var(k, v);
        }
        let args = super::super::serve::Args {
            listen: req.listen,
            control: req.control,
        };
        let code = super::super::serve::run_pod(args);
        let _ = std::io::stdout().flush();
        code
    }

    /// The child's own process group, output to its log, stdin from /dev/null, SIGCHLD
    /// as before the server blocked it, and death with the server.
    fn detach(
        req: &PodRequest,
        server: libc::pid_t,
        sfd: libc::c_int,
        old_mask: &libc::sigset_t,
    ) -> Result<(), String> {
        use std::os::unix::io::AsRawFd;
        let log =
            std::fs::File::create(&req.log).map_err(|e| format!("{}: {e}", req.log.display()))?;
        let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        // SAFETY: plain syscalls on descriptors this process owns.
        unsafe {
            libc::close(sfd);
            libc::sigprocmask(libc::SIG_SETMASK, old_mask, std::ptr::null_mut());
            if libc::dup2(log.as_raw_fd(), 1) < 0
                || libc::dup2(log.as_raw_fd(), 2) < 0
                || libc::dup2(null.as_raw_fd(), 0) < 0
            {
                return Err(os_err("redirecting output"));
            }
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != server {
                return Err("the fork server is gone".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_one_json_object_named_by_kind() {
        let r = Report::Exited { pid: 7, status: 9 };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(line, r#"{"exited":{"pid":7,"status":9}}"#);
        assert_eq!(serde_json::from_str::<Report>(&line).unwrap(), r);
    }
}

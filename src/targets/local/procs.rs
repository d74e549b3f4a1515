//! The registry of every process meshcheck starts. Each child runs in its own process
//! group and, on Linux, dies with meshcheck (PR_SET_PDEATHSIG); stopping is SIGTERM to the group,
//! a grace period, then SIGKILL. The registry is global so that Ctrl-C and panics can
//! stop everything, whichever target started it.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Proc {
    owner: u64,
    name: String,
    handle: Handle,
    log: PathBuf,
    exited: Option<String>,
    stopping: bool,
}

/// A process meshcheck started: its own child, or a pod the stub fork server forked
/// (see [`super::forker`]), whose exit that server reports.
enum Handle {
    Own(Child),
    Forked(u32),
}

impl Handle {
    fn id(&self) -> u32 {
        match self {
            Handle::Own(c) => c.id(),
            Handle::Forked(pid) => *pid,
        }
    }

    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self {
            Handle::Own(c) => c.try_wait(),
            Handle::Forked(pid) => match forked().get(pid) {
                Some(Some(end)) => end
                    .map(Some)
                    .map_err(|k| std::io::Error::new(k, "gone with the fork server")),
                _ => Ok(None),
            },
        }
    }

    /// Waits for the exit; a forked pod's for at most [`FORKED_REAP`] (its server
    /// reports it; when the server is gone, so is the pod).
    fn wait(&mut self) {
        match self {
            Handle::Own(c) => {
                let _ = c.wait();
            }
            Handle::Forked(pid) => {
                let pid = *pid;
                let deadline = Instant::now() + FORKED_REAP;
                let mut all = forked();
                while matches!(all.get(&pid), Some(None)) && Instant::now() < deadline {
                    all = FORKED_ENDED
                        .wait_timeout(all, deadline - Instant::now())
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                all.remove(&pid);
            }
        }
    }
}

/// How long stopping waits for a fork server to report a killed pod.
const FORKED_REAP: Duration = Duration::from_secs(5);

/// Forked pods by pid: None while running, then how they ended (an error: the fork
/// server went away with them, so the status is unknown).
type ForkedEnd = Option<Result<ExitStatus, std::io::ErrorKind>>;
static FORKED: Mutex<BTreeMap<u32, ForkedEnd>> = Mutex::new(BTreeMap::new());
static FORKED_ENDED: std::sync::Condvar = std::sync::Condvar::new();

fn forked() -> std::sync::MutexGuard<'static, BTreeMap<u32, ForkedEnd>> {
    FORKED.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fork server started pod `pid`.
pub fn forked_started(pid: u32) {
    forked().insert(pid, None);
}

/// A fork server reports that pod `pid` ended with raw wait status `status`.
pub fn forked_exited(pid: u32, status: i32) {
    use std::os::unix::process::ExitStatusExt;
    if let Some(e) = forked().get_mut(&pid) {
        *e = Some(Ok(ExitStatus::from_raw(status)));
    }
    FORKED_ENDED.notify_all();
}

/// A fork server is gone: the pods it started and had not seen end died with it.
pub fn forked_server_gone(pids: &[u32]) {
    let mut all = forked();
    for pid in pids {
        if let Some(e @ None) = all.get_mut(pid) {
            *e = Some(Err(std::io::ErrorKind::NotFound));
        }
    }
    drop(all);
    FORKED_ENDED.notify_all();
}

/// Registers pod `pid`, forked by a fork server, as process `name` of `owner`.
pub fn register_forked(owner: u64, name: &str, pid: u32, log: &Path) {
    procs().push(Proc {
        owner,
        name: name.to_string(),
        handle: Handle::Forked(pid),
        log: log.to_path_buf(),
        exited: None,
        stopping: false,
    });
}

static PROCS: Mutex<Vec<Proc>> = Mutex::new(Vec::new());

fn procs() -> std::sync::MutexGuard<'static, Vec<Proc>> {
    PROCS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts `cmd` as `name`, output to `log`, in its own process group.
///
/// Call from a thread that outlives the child (the parent-death signal follows the
/// spawning thread): the main thread, or a test's thread.
pub fn spawn(owner: u64, name: &str, cmd: &mut Command, log: &Path) -> std::io::Result<u32> {
    let out = std::fs::File::create(log)?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    spawn_prepared(owner, name, cmd, log).map(|c| c.0)
}

/// Like [`spawn`], with stdin and stdout piped to meshcheck (stderr to `log`).
pub fn spawn_piped(
    owner: u64,
    name: &str,
    cmd: &mut Command,
    log: &Path,
) -> std::io::Result<(u32, std::process::ChildStdin, std::process::ChildStdout)> {
    let err = std::fs::File::create(log)?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err));
    let (pid, stdin, stdout) = spawn_prepared(owner, name, cmd, log)?;
    match (stdin, stdout) {
        (Some(i), Some(o)) => Ok((pid, i, o)),
        _ => Err(std::io::Error::other("no pipes to the child")),
    }
}

type Pipes = (
    u32,
    Option<std::process::ChildStdin>,
    Option<std::process::ChildStdout>,
);

fn spawn_prepared(owner: u64, name: &str, cmd: &mut Command, log: &Path) -> std::io::Result<Pipes> {
    cmd.process_group(0);
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork
    // and exec. Linux only: elsewhere children are stopped on every exit path meshcheck
    // handles (end, error, panic hook, Ctrl-C), not when it is SIGKILLed.
    #[cfg(target_os = "linux")]
    let parent = std::process::id() as libc::pid_t;
    #[cfg(target_os = "linux")]
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The parent died before prctl took effect.
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut all = procs();
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
    all.push(Proc {
        owner,
        name: name.to_string(),
        handle: Handle::Own(child),
        log: log.to_path_buf(),
        exited: None,
        stopping: false,
    });
    Ok((pid, stdin, stdout))
}

fn signal_group(p: &Proc, sig: libc::c_int) {
    // SAFETY: plain syscall on a pid we started (its own group).
    unsafe {
        libc::killpg(p.handle.id() as libc::pid_t, sig);
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (_, Some(9)) => "was killed (SIGKILL)".into(),
        (_, Some(15)) => "was terminated (SIGTERM)".into(),
        (_, Some(s)) => format!("was killed by signal {s}"),
        _ => "exited".into(),
    }
}

fn poll(p: &mut Proc) -> bool {
    if p.exited.is_some() {
        return true;
    }
    match p.handle.try_wait() {
        Ok(Some(st)) => {
            p.exited = Some(describe(st));
            true
        }
        Ok(None) => false,
        Err(_) => {
            p.exited = Some("is gone".into());
            true
        }
    }
}

/// Processes of `owner` that exited while they were supposed to run: (name, how, log).
pub fn casualties(owner: u64) -> Vec<(String, String, PathBuf)> {
    let mut all = procs();
    all.iter_mut()
        .filter(|p| p.owner == owner && !p.stopping)
        .filter_map(|p| {
            poll(p).then(|| {
                (
                    p.name.clone(),
                    p.exited.clone().unwrap_or_default(),
                    p.log.clone(),
                )
            })
        })
        .collect()
}

/// Whether the process `name` of `owner` is still running (None: unknown name).
pub fn is_running(owner: u64, name: &str) -> Option<bool> {
    let mut all = procs();
    all.iter_mut()
        .find(|p| p.owner == owner && p.name == name)
        .map(|p| !poll(p))
}

/// The process `name` of `owner` is being replaced (a hot restart: it drains and
/// exits on its own): it keeps running under `name (retiring)`, its exit is no
/// casualty, and it is still stopped with its owner. Returns whether it was found.
pub fn retire(owner: u64, name: &str) -> bool {
    let mut all = procs();
    match all
        .iter_mut()
        .find(|p| p.owner == owner && p.name == name && !p.stopping)
    {
        Some(p) => {
            p.name = format!("{name} (retiring)");
            p.stopping = true;
            true
        }
        None => false,
    }
}

/// How many retired processes of `owner` still run (draining after a hot restart).
pub fn retiring(owner: u64) -> usize {
    let mut all = procs();
    all.iter_mut()
        .filter(|p| p.owner == owner && p.name.ends_with(" (retiring)"))
        .filter_map(|p| (!poll(p)).then_some(()))
        .count()
}

/// SIGKILL to the process `name` of `owner` at once, reaped, and forgotten (a crash,
/// for a test-only transition that does not drain). Returns whether it was found.
pub fn kill_now(owner: u64, name: &str) -> bool {
    let found = {
        let mut all = procs();
        all.iter()
            .position(|p| p.owner == owner && p.name == name)
            .map(|i| all.remove(i))
    };
    match found {
        Some(mut p) => {
            signal_group(&p, libc::SIGKILL);
            p.handle.wait();
            true
        }
        None => false,
    }
}

/// Pid of process `name` of `owner`.
pub fn pid_of(owner: u64, name: &str) -> Option<u32> {
    procs()
        .iter()
        .find(|p| p.owner == owner && p.name == name)
        .map(|p| p.handle.id())
}

/// Stops the processes `filter` selects: SIGTERM to each group, up to `grace` for
/// them to exit, then SIGKILL; reaps them all. Returns how many were stopped.
fn stop_where(filter: impl Fn(&Proc) -> bool, grace: Duration) -> usize {
    let mut mine: Vec<Proc> = {
        let mut all = procs();
        let (mine, rest): (Vec<Proc>, Vec<Proc>) = all.drain(..).partition(|p| filter(p));
        *all = rest;
        mine
    };
    for p in mine.iter_mut() {
        p.stopping = true;
        if !poll(p) {
            signal_group(p, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !mine.iter_mut().all(poll) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in mine.iter_mut() {
        // The group may hold grandchildren even when the leader is gone.
        signal_group(p, libc::SIGKILL);
        p.handle.wait();
    }
    mine.len()
}

/// Stops the process `name` of `owner` (SIGTERM, up to `grace`, SIGKILL): one
/// container of a sandbox pod. Returns whether it was found.
pub fn stop_named(owner: u64, name: &str, grace: Duration) -> bool {
    stop_where(|p| p.owner == owner && p.name == name, grace) > 0
}

/// Stops the process `name` of `owner` as a container runtime stops a container:
/// SIGTERM to the process alone (its children, e.g. the Envoy pilot-agent started, are
/// its business while it shuts down), up to `grace` for it to exit, then SIGKILL to
/// its whole group. Returns whether it was found.
pub fn stop_container(owner: u64, name: &str, grace: Duration) -> bool {
    let found = {
        let mut all = procs();
        all.iter()
            .position(|p| p.owner == owner && p.name == name)
            .map(|i| all.remove(i))
    };
    let Some(mut p) = found else {
        return false;
    };
    p.stopping = true;
    // Out of the registry while it stops, but its group stays known: a Ctrl-C (or the
    // end of meshcheck) meanwhile stops it with everything else, children included
    // (pilot-agent's Envoy), instead of leaving them behind.
    let _group = register_group(p.handle.id());
    if !poll(&mut p) {
        // SAFETY: a plain syscall on a pid we started.
        unsafe {
            libc::kill(p.handle.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && !poll(&mut p) {
        std::thread::sleep(Duration::from_millis(10));
    }
    signal_group(&p, libc::SIGKILL);
    p.handle.wait();
    true
}

/// Sends `sig` to the group of process `name` of `owner`, without waiting.
pub fn signal_named(owner: u64, name: &str, sig: libc::c_int) -> bool {
    let all = procs();
    match all.iter().find(|p| p.owner == owner && p.name == name) {
        Some(p) => {
            signal_group(p, sig);
            true
        }
        None => false,
    }
}

/// Forgets the processes of `owner` that exited on their own and returns them
/// (name, how): a sandbox pod's containers, which its kubelet restarts.
pub fn reap_exited(owner: u64) -> Vec<(String, String)> {
    let mut all = procs();
    let mut out = Vec::new();
    all.retain_mut(|p| {
        if p.owner == owner && !p.stopping && poll(p) {
            out.push((p.name.clone(), p.exited.clone().unwrap_or_default()));
            // A container ends with its first process: what it started (Envoy under
            // pilot-agent) goes too, as a runtime kills a container's PID namespace.
            signal_group(p, libc::SIGKILL);
            false
        } else {
            true
        }
    });
    out
}

/// Stops every process of `owner`.
pub fn stop_owner(owner: u64, grace: Duration) -> usize {
    stop_where(|p| p.owner == owner, grace)
}

/// Stops every process meshcheck started (Ctrl-C, end of run): the registry's, and
/// the process groups of the external tools running now ([`register_group`]).
pub fn stop_all(grace: Duration) -> usize {
    stop_tool_groups(grace) + stop_where(|_| true, grace)
}

/// SIGKILL to everything at once, without waiting: for panics and a second Ctrl-C.
/// Never blocks on the registry lock.
pub fn kill_all_now() {
    if let Ok(all) = PROCS.try_lock() {
        for p in all.iter() {
            signal_group(p, libc::SIGKILL);
        }
    }
    if let Ok(groups) = GROUPS.try_lock() {
        for g in groups.iter() {
            // SAFETY: plain syscall on a group a tool we started leads.
            unsafe {
                libc::killpg(*g as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

/// Process groups of external tools running now (kind, istioctl, docker: started by
/// `cluster::run_tool`, each the leader of its own group).
static GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn groups() -> std::sync::MutexGuard<'static, Vec<u32>> {
    GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tool's process group, registered while the guard lives.
#[derive(Debug)]
pub struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        groups().retain(|g| *g != self.0);
    }
}

/// Registers the process group `pgid` (a tool running now) so that [`stop_all`]
/// stops it, e.g. `kind create cluster` on Ctrl-C before the cleanup deletes the
/// cluster (otherwise the creation goes on and leaves a node container behind).
pub fn register_group(pgid: u32) -> GroupGuard {
    groups().push(pgid);
    GroupGuard(pgid)
}

/// Whether a process of group `pgid` is alive (zombies do not count).
fn group_alive(pgid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return false;
        };
        for e in entries.flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp ...
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let mut f = rest.split(' ');
            let state = f.next().unwrap_or("");
            let pgrp = f.nth(1).and_then(|p| p.parse::<u32>().ok());
            if pgrp == Some(pgid) && state != "Z" && state != "X" {
                return true;
            }
        }
        false
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: signal 0 only checks that the group exists.
        unsafe { libc::killpg(pgid as libc::pid_t, 0) == 0 }
    }
}

/// Stops the registered tool groups: SIGTERM, up to `grace`, then SIGKILL. Their
/// leaders are reaped by whoever awaits them. Returns how many groups there were.
pub fn stop_tool_groups(grace: Duration) -> usize {
    let mine: Vec<u32> = groups().clone();
    for g in &mine {
        // SAFETY: plain syscall on a group a tool we started leads.
        unsafe {
            libc::killpg(*g as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && mine.iter().any(|g| group_alive(*g)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for g in &mine {
        // SAFETY: as above.
        unsafe {
            libc::killpg(*g as libc::pid_t, libc::SIGKILL);
        }
    }
    mine.len()
}

/// Installs a panic hook that kills every child when the calling (main) thread
/// panics, before the default hook runs. Panics of check threads are caught and
/// reported as failed checks; they leave the target running for the other checks.
pub fn install_panic_hook() {
    let main = std::thread::current().id();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == main {
            kill_all_now();
        }
        prev(info);
    }));
}

/// A fresh owner id for a target.
pub fn new_owner() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Registers a working directory to remove if the run is interrupted.
pub fn register_dir(path: &Path) {
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.to_path_buf());
}

/// Forgets a directory (its owner removed or kept it).
pub fn unregister_dir(path: &Path) {
    DIRS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|p| p != path);
}

/// Removes every registered directory (interrupt path).
pub fn remove_dirs() {
    for d in DIRS.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = std::fs::remove_dir_all(d);
    }
}

type Cleanup = Box<dyn FnOnce() + Send>;
static CLEANUPS: Mutex<Vec<(u64, Cleanup)>> = Mutex::new(Vec::new());

/// Registers an action for the interrupt and error paths (delete a kind cluster,
/// delete the objects a run created); returns its id.
pub fn register_cleanup(f: Cleanup) -> u64 {
    let id = new_owner();
    CLEANUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, f));
    id
}

/// Forgets an action (its owner cleaned up itself).
pub fn unregister_cleanup(id: u64) {
    CLEANUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(i, _)| *i != id);
}

/// Runs the registered actions, most recent first (interrupt and error paths).
pub fn run_cleanups() {
    let all: Vec<(u64, Cleanup)> =
        std::mem::take(&mut *CLEANUPS.lock().unwrap_or_else(|e| e.into_inner()));
    for (_, f) in all.into_iter().rev() {
        f();
    }
}

//! The registry of every process meshcheck starts. Each child runs in its own process
//! group and, on Linux, dies with meshcheck (PR_SET_PDEATHSIG); stopping is SIGTERM to the group,
//! a grace period, then SIGKILL. The registry is global so that Ctrl-C and panics can
//! stop everything, whichever target started it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Proc {
    owner: u64,
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<String>,
    stopping: bool,
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
        .stderr(Stdio::from(err))
        .process_group(0);
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
    let child = cmd.spawn()?;
    let pid = child.id();
    all.push(Proc {
        owner,
        name: name.to_string(),
        child,
        log: log.to_path_buf(),
        exited: None,
        stopping: false,
    });
    Ok(pid)
}

/// The variable a child started by [`spawn_self_reaping`] reads: the pid it must be
/// the child of.
pub const PARENT_PID_ENV: &str = "MESHCHECK_PARENT_PID";

/// Starts each `(name, cmd, log)` like [`spawn`], for programs that set their own
/// parent-death signal ([`die_with_parent`], which the stub calls first thing). With
/// no pre-exec hook the standard library starts them with posix_spawn (vfork: no copy
/// of meshcheck's page tables), and they are started on [`SPAWNER_THREADS`] threads
/// at once, so that a large mesh's hundreds of stubs do not wait on each other's
/// exec. The spawner threads live as long as meshcheck (a child's parent-death signal
/// follows the thread that started it), so these children die with meshcheck.
/// Returns the pids, in order; stops at the first that cannot start.
pub fn spawn_self_reaping(
    owner: u64,
    jobs: Vec<(String, Command, PathBuf)>,
) -> Result<Vec<u32>, (String, std::io::Error)> {
    let mut replies = Vec::with_capacity(jobs.len());
    for (k, (name, mut cmd, log)) in jobs.into_iter().enumerate() {
        let prepared = (|| -> std::io::Result<()> {
            let out = std::fs::File::create(&log)?;
            let err = out.try_clone()?;
            cmd.stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .process_group(0)
                .env(PARENT_PID_ENV, std::process::id().to_string());
            Ok(())
        })();
        if let Err(e) = prepared {
            return Err((name, e));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        spawner(k).send((cmd, tx)).map_err(|_| {
            (
                name.clone(),
                std::io::Error::other("the spawner thread is gone"),
            )
        })?;
        replies.push((name, log, rx));
    }
    let mut pids = Vec::with_capacity(replies.len());
    for (name, log, rx) in replies {
        let child = match rx.recv() {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err((name, e)),
            Err(_) => return Err((name, std::io::Error::other("the spawner thread is gone"))),
        };
        pids.push(child.id());
        procs().push(Proc {
            owner,
            name,
            child,
            log,
            exited: None,
            stopping: false,
        });
    }
    Ok(pids)
}

/// Threads that start self-reaping children ([`spawn_self_reaping`]).
pub const SPAWNER_THREADS: usize = 4;

type SpawnJob = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

/// The sender of spawner thread `k % SPAWNER_THREADS` (started on first use; they
/// never end, so the children they start die with meshcheck, not with a thread).
fn spawner(k: usize) -> std::sync::mpsc::Sender<SpawnJob> {
    static SPAWNERS: std::sync::OnceLock<Vec<Mutex<std::sync::mpsc::Sender<SpawnJob>>>> =
        std::sync::OnceLock::new();
    let all = SPAWNERS.get_or_init(|| {
        (0..SPAWNER_THREADS)
            .map(|i| {
                let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
                let _ = std::thread::Builder::new()
                    .name(format!("meshcheck-spawner-{i}"))
                    .spawn(move || {
                        for (mut cmd, reply) in rx {
                            let _ = reply.send(cmd.spawn());
                        }
                    });
                Mutex::new(tx)
            })
            .collect()
    });
    all[k % all.len()]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// In a child started by [`spawn_self_reaping`]: dies (SIGKILL) when the thread that
/// started it ends, as [`spawn`]'s children do; exits at once if that parent is
/// already gone. Does nothing without [`PARENT_PID_ENV`] (a stub in a container).
pub fn die_with_parent() {
    let Some(parent) = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<libc::pid_t>().ok())
    else {
        return;
    };
    #[cfg(target_os = "linux")]
    // SAFETY: prctl and getppid are plain syscalls.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    // SAFETY: as above.
    if unsafe { libc::getppid() } != parent {
        std::process::exit(1);
    }
}

fn signal_group(p: &Proc, sig: libc::c_int) {
    // SAFETY: plain syscall on a pid we started (its own group).
    unsafe {
        libc::killpg(p.child.id() as libc::pid_t, sig);
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
    match p.child.try_wait() {
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
            let _ = p.child.wait();
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
        .map(|p| p.child.id())
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
        let _ = p.child.wait();
    }
    mine.len()
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

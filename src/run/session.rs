//! What every command that brings a target up needs around it: the async runtime, the
//! panic hook, Ctrl-C / SIGTERM handling, and a working directory removed on Ctrl-C.

use crate::error::{exit, Error};
use crate::targets::local::procs;
use crate::targets::TargetError;
use std::sync::Arc;
use std::time::Duration;

/// Installs Ctrl-C / SIGTERM handling: the first signal stops every process (SIGTERM,
/// grace, SIGKILL), removes working directories and exits 130; a second one kills
/// everything at once. With `probing`, a first signal while its receiver listens (a
/// probe, an upgrade's steps) only tells the run to stop: it ends what is under way
/// (an upgrade undoes its relabelling), stops the target and writes its report.
fn install_signal_handlers(
    rt: &tokio::runtime::Runtime,
    grace: Duration,
    probing: Option<Arc<tokio::sync::watch::Sender<bool>>>,
) {
    rt.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        if let Some(stop) = probing.filter(|s| s.send(true).is_ok()) {
            eprintln!("\ninterrupted: finishing the step under way, undoing what it changed, then stopping the target (Ctrl-C again to kill at once)");
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
            drop(stop);
            procs::kill_all_now();
            procs::remove_dirs();
            std::process::exit(exit::INTERRUPTED as i32);
        }
        eprintln!("\ninterrupted: stopping every process meshcheck started (Ctrl-C again to kill at once)");
        std::thread::spawn(move || {
            procs::stop_all(grace);
            procs::run_cleanups();
            procs::remove_dirs();
            std::process::exit(exit::INTERRUPTED as i32);
        });
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        procs::kill_all_now();
        procs::remove_dirs();
        std::process::exit(exit::INTERRUPTED as i32);
    });
}

/// The async runtime of a run, with the panic hook and Ctrl-C handling installed
/// (`probing`: see [`install_signal_handlers`]).
pub fn runtime(
    grace: Duration,
    probing: Option<Arc<tokio::sync::watch::Sender<bool>>>,
) -> Result<tokio::runtime::Runtime, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| TargetError::Io {
            what: "cannot start the async runtime".into(),
            source,
        })?;
    procs::install_panic_hook();
    install_signal_handlers(&rt, grace, probing);
    Ok(rt)
}

/// A working directory for cluster targets (kind config, kubeconfig), removed on Ctrl-C.
pub fn workdir() -> Result<tempfile::TempDir, Error> {
    let workdir = tempfile::Builder::new()
        .prefix("meshcheck-run-")
        .tempdir()
        .map_err(|source| TargetError::Io {
            what: "cannot create a working directory".into(),
            source,
        })?;
    procs::register_dir(workdir.path());
    Ok(workdir)
}

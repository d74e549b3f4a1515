//! Running a short-lived child with a deadline: killed when the deadline passes, and
//! (on Linux) when meshcheck dies, so an interrupted run leaves no oracle behind.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs `cmd` to its end or until `timeout`, collecting what it prints. `own_group`
/// puts it in its own process group (killed whole on timeout); without it, a Ctrl-C at
/// the terminal reaches the child and its children too (a long build).
pub fn output_with_timeout(
    mut cmd: Command,
    timeout: Duration,
    own_group: bool,
) -> Result<Output, String> {
    if own_group {
        cmd.process_group(0);
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                if own_group {
                    // SAFETY: killpg has no memory effects; the group is the child's own.
                    unsafe {
                        libc::killpg(child.id() as i32, libc::SIGKILL);
                    }
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {timeout:?}; killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

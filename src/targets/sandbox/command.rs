//! `meshcheck sandbox`: brings the sandbox up (optionally with fixtures applied) and
//! keeps it until Ctrl-C, for a look inside or for other tools: it prints the admin
//! kubeconfig and how to enter its network namespace.

use super::target::{start_sandbox, SandboxOptions};
use crate::error::{exit, Error};
use crate::targets::TargetError;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// The Istio version installed.
    #[arg(long, env = "MESHCHECK_ISTIO_VERSION", default_value = crate::targets::kind::tools::ISTIO_VERSION)]
    pub istio_version: String,
    /// Also build these Istio versions (for an upgrade by hand).
    #[arg(long)]
    pub also: Vec<String>,
    /// Keep the working directory when it ends.
    #[arg(long)]
    pub keep: bool,
    /// Write the admin kubeconfig here too (with `--expose-api`: naming the exposed
    /// address, usable from the host).
    #[arg(long)]
    pub kubeconfig_out: Option<PathBuf>,
    /// Also serve the API server on this host address (e.g. 127.0.0.1:16443; port 0:
    /// any free port), so tools outside the sandbox's network reach it.
    #[arg(long, value_name = "ADDR")]
    pub expose_api: Option<std::net::SocketAddr>,
}

/// `meshcheck sandbox`.
pub fn command(args: SandboxArgs) -> Result<u8, Error> {
    let mut versions = vec![args.istio_version.clone()];
    versions.extend(args.also.iter().cloned());
    let exe = std::env::current_exe().map_err(|source| TargetError::Io {
        what: "cannot find the meshcheck executable".into(),
        source,
    })?;
    let stub = exe.with_file_name("meshcheck-stub");
    let stub = if stub.is_file() {
        (stub, Vec::new())
    } else {
        (exe, vec!["stub".to_string()])
    };
    // Bound on the host before the network namespace is entered: the socket stays
    // the host's, and connections accepted on it are forwarded inside.
    let exposed = match args.expose_api {
        Some(addr) => Some(bind_host(addr)?),
        None => None,
    };
    let prepared = super::prepare(&versions, stub).map_err(TargetError::from)?;
    let timeouts = crate::timeouts::Timeouts::default();
    let rt = crate::run::session::runtime(timeouts.stop_grace, None)?;
    let opts = SandboxOptions {
        keep: args.keep,
        ..Default::default()
    };
    let sandbox = rt.block_on(start_sandbox(prepared, &opts))?;
    let mut kubeconfig = sandbox.kubeconfig().to_path_buf();
    if let Some(listener) = exposed {
        let addr = listener.local_addr().map_err(|source| TargetError::Io {
            what: "cannot read the exposed address".into(),
            source,
        })?;
        let _guard = rt.enter();
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|source| TargetError::Io {
                what: "cannot serve the exposed address".into(),
                source,
            })?;
        rt.spawn(forward(listener));
        kubeconfig = sandbox.kubeconfig().with_file_name("exposed.kubeconfig");
        let text = std::fs::read_to_string(sandbox.kubeconfig())
            .unwrap_or_default()
            .replace(
                &format!("server: {}", super::stack::API_SERVER),
                &format!("server: https://{addr}"),
            );
        std::fs::write(&kubeconfig, text).map_err(|source| TargetError::Io {
            what: format!("cannot write {}", kubeconfig.display()),
            source,
        })?;
        println!("api: https://{addr}");
    }
    if let Some(out) = &args.kubeconfig_out {
        std::fs::copy(&kubeconfig, out).map_err(|source| TargetError::Io {
            what: format!("cannot write {}", out.display()),
            source,
        })?;
    }
    println!("kubeconfig: {}", kubeconfig.display());
    println!(
        "network: nsenter --net=/proc/{}/ns/net (kubectl --kubeconfig ... works from there)",
        std::process::id()
    );
    println!("sandbox: up; Ctrl-C stops it");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    rt.block_on(sandbox.stop());
    Ok(exit::OK)
}

/// A listener on the host's `addr`; a port in use is the environment's fault (exit 3).
fn bind_host(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, Error> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!("{addr} is in use: pick another --expose-api port (or 0 for any free one)")
            }
            _ => format!("cannot listen on {addr}: {e}"),
        };
        TargetError::Unavailable {
            target: "sandbox".into(),
            why,
        }
    })?;
    l.set_nonblocking(true).map_err(|source| TargetError::Io {
        what: format!("cannot listen on {addr}"),
        source,
    })?;
    Ok(l)
}

/// Forwards every connection accepted on the host's `listener` to the API server in
/// the sandbox's network (the runtime's threads are in it).
async fn forward(listener: tokio::net::TcpListener) {
    while let Ok((mut outside, _)) = listener.accept().await {
        tokio::spawn(async move {
            let api = super::stack::API_SERVER.trim_start_matches("https://");
            if let Ok(mut inside) = tokio::net::TcpStream::connect(api).await {
                let _ = tokio::io::copy_bidirectional(&mut outside, &mut inside).await;
            }
        });
    }
}

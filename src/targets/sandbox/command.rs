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
    /// Write the admin kubeconfig here too.
    #[arg(long)]
    pub kubeconfig_out: Option<PathBuf>,
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
    let prepared = super::prepare(&versions, stub).map_err(TargetError::from)?;
    let timeouts = crate::timeouts::Timeouts::default();
    let rt = crate::run::session::runtime(timeouts.stop_grace, None)?;
    let opts = SandboxOptions {
        keep: args.keep,
        ..Default::default()
    };
    let sandbox = rt.block_on(start_sandbox(prepared, &opts))?;
    if let Some(out) = &args.kubeconfig_out {
        std::fs::copy(sandbox.kubeconfig(), out).map_err(|source| TargetError::Io {
            what: format!("cannot write {}", out.display()),
            source,
        })?;
    }
    println!("kubeconfig: {}", sandbox.kubeconfig().display());
    println!(
        "network: nsenter --net=/proc/{}/ns/net (kubectl --kubeconfig ... works from there)",
        std::process::id()
    );
    println!("sandbox: up; Ctrl-C stops it");
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    rt.block_on(sandbox.stop());
    Ok(exit::OK)
}

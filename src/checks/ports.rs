//! `ports`: scans the node address (whole NodePort range plus well-known ports). The
//! only port that may answer is the NodePort the gateway Service gives to the allowed
//! Service ports (80). Any other open port fails the check, by number.

use super::{Ctx, Outcome};
use crate::suite::{parse_range, PortsCheck};
use std::net::SocketAddr;
use std::sync::Arc;

/// Concurrent connects in flight (loopback refusals are immediate; a real node may
/// drop SYNs, so each connect has the `connect` timeout).
const PARALLEL: usize = 256;

pub async fn run(ctx: &Ctx, check: &PortsCheck) -> Outcome {
    let node = ctx.target.node_address();
    let mut allowed = Vec::new();
    for sp in &check.allow_service_ports {
        if let Some(np) = ctx.target.node_port(*sp) {
            allowed.push((np, *sp));
        }
    }
    let mut ports: Vec<u16> = Vec::new();
    for r in &check.scan {
        match parse_range(r) {
            Ok(range) => ports.extend(range),
            Err(e) => return Outcome::fail(e, ""),
        }
    }
    ports.sort_unstable();
    ports.dedup();
    let sem = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    let timeout = ctx.timeouts.connect;
    for &p in &ports {
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let addr = SocketAddr::new(node, p);
            let open = matches!(
                tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            );
            (p, open)
        });
    }
    let mut open = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok((p, true)) = r {
            open.push(p);
        }
    }
    open.sort_unstable();
    let unexpected: Vec<u16> = open
        .iter()
        .copied()
        .filter(|p| !allowed.iter().any(|(np, _)| np == p))
        .collect();
    let allowed_text = if allowed.is_empty() {
        "none (no NodePort for the allowed Service ports)".to_string()
    } else {
        allowed
            .iter()
            .map(|(np, sp)| format!("{np} (Service port {sp})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let detail = format!(
        "scanned {} port(s) on {node} ({})\nallowed: {allowed_text}\nopen: {}",
        ports.len(),
        check.scan.join(", "),
        if open.is_empty() {
            "none".to_string()
        } else {
            open.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    if unexpected.is_empty() {
        let listening: Vec<String> = open.iter().map(|p| p.to_string()).collect();
        Outcome {
            passed: true,
            message: format!(
                "{} ports scanned on {node}; open: {}",
                ports.len(),
                if listening.is_empty() {
                    "none".into()
                } else {
                    listening.join(", ")
                }
            ),
            detail,
            ..Outcome::pass("")
        }
    } else {
        Outcome::fail(
            format!(
                "unexpected open port(s) on {node}: {} (only {allowed_text} may answer)",
                unexpected
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            detail,
        )
    }
}

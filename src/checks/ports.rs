//! `ports`: scans the node address (whole NodePort range plus well-known ports). The
//! only port that may answer is the NodePort the gateway Service gives to the allowed
//! Service ports (80). Any other open port fails the check, by number, except the
//! NodePorts of Services that are not the fixtures' (on a shared cluster: other
//! tenants'), which are listed as information: the check judges what the fixtures
//! expose.

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
    let (others, others_note) = match ctx.target.other_node_ports().await {
        Ok(o) => (o, None),
        Err(e) => (
            Vec::new(),
            Some(format!(
                "the NodePorts of the cluster's other Services cannot be read ({e}): every open port is judged, which is meaningful only on a dedicated cluster"
            )),
        ),
    };
    let other_of = |p: u16| others.iter().find(|(np, _)| *np == p).map(|(_, s)| s);
    let unexpected: Vec<u16> = open
        .iter()
        .copied()
        .filter(|p| !allowed.iter().any(|(np, _)| np == p) && other_of(*p).is_none())
        .collect();
    let not_judged: Vec<String> = open
        .iter()
        .filter(|p| !allowed.iter().any(|(np, _)| np == *p))
        .filter_map(|p| other_of(*p).map(|s| format!("{p} (Service {s})")))
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
    let mut detail = format!(
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
    if !not_judged.is_empty() {
        detail.push_str(&format!(
            "\nnot judged (NodePorts of Services that are not the fixtures'): {}",
            not_judged.join(", ")
        ));
    }
    if let Some(n) = &others_note {
        detail.push_str(&format!("\nnote: {n}"));
    }
    if unexpected.is_empty() {
        let listening: Vec<String> = open.iter().map(|p| p.to_string()).collect();
        let mut message = format!(
            "{} ports scanned on {node}; open: {}",
            ports.len(),
            if listening.is_empty() {
                "none".into()
            } else {
                listening.join(", ")
            }
        );
        if !not_judged.is_empty() {
            message.push_str(&format!(
                "; not judged (other Services' NodePorts): {}",
                not_judged.join(", ")
            ));
        }
        Outcome {
            passed: true,
            message,
            detail,
            ..Outcome::pass("")
        }
    } else {
        Outcome::fail(
            format!(
                "unexpected open port(s) on {node}: {} (only {allowed_text} may answer){}",
                unexpected
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                others_note.map(|n| format!("; {n}")).unwrap_or_default()
            ),
            detail,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::testing::FixedTarget;
    use std::collections::BTreeMap;

    async fn listener() -> (tokio::net::TcpListener, u16) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let p = l.local_addr().expect("its address").port();
        (l, p)
    }

    async fn scan(target: FixedTarget, ports: &[u16]) -> Outcome {
        let ctx = Ctx::new(
            std::sync::Arc::new(target),
            crate::timeouts::Timeouts::default(),
            80,
        );
        let check = PortsCheck {
            scan: ports.iter().map(|p| p.to_string()).collect(),
            allow_service_ports: vec![80],
        };
        run(&ctx, &check).await
    }

    /// On a shared cluster another tenant's NodePort answers too: listed, not judged.
    /// A port of the fixtures' own (or of nobody known) still fails the check.
    #[tokio::test]
    async fn other_services_node_ports_are_information_not_failures() {
        let (_gw, gw) = listener().await;
        let (_other, other) = listener().await;
        let (_own, own) = listener().await;
        let target = || FixedTarget {
            node_ports: BTreeMap::from([(80, gw)]),
            other_node_ports: Ok(vec![(other, "payments/checkout".to_string())]),
            ..FixedTarget::new()
        };
        let o = scan(target(), &[gw, other]).await;
        assert!(o.passed, "{} {}", o.message, o.detail);
        assert!(
            o.message.contains(&format!(
                "not judged (other Services' NodePorts): {other} (Service payments/checkout)"
            )),
            "{}",
            o.message
        );

        let o = scan(target(), &[gw, other, own]).await;
        assert!(!o.passed);
        assert!(
            o.message.starts_with(&format!(
                "unexpected open port(s) on 127.0.0.1: {own} (only"
            )),
            "{}",
            o.message
        );

        // The other Services cannot be read: every open port is judged, and the
        // check says why.
        let o = scan(
            FixedTarget {
                other_node_ports: Err("services is forbidden".into()),
                ..target()
            },
            &[gw, other],
        )
        .await;
        assert!(!o.passed);
        assert!(
            o.message.contains(&format!(": {other} (only")),
            "{}",
            o.message
        );
        assert!(o.message.contains("services is forbidden"), "{}", o.message);
        assert!(o.message.contains("dedicated cluster"), "{}", o.message);
    }
}

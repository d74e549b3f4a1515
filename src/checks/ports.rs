//! `ports`: scans the node address (whole NodePort range plus well-known ports). The
//! only port that may answer is the NodePort the gateway Service gives to the allowed
//! Service ports (80). Any other open port fails the check, by number, except the
//! NodePorts of Services that are not the fixtures' (on a shared cluster: other
//! tenants'), which are listed as information: the check judges what the fixtures
//! expose.

use super::{Ctx, Outcome};
use crate::suite::{parse_range, PortsCheck};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Concurrent connects in flight (loopback refusals are immediate; a real node may
/// drop SYNs, so each connect has the `connect` timeout).
const PARALLEL: usize = 256;

pub async fn run(ctx: &Ctx, check: &PortsCheck) -> Outcome {
    let node = ctx.target.node_address();
    let allowed = allowed_node_ports(ctx, &check.allow_service_ports);
    let ports = match ports_to_scan(&check.scan) {
        Ok(ports) => ports,
        Err(e) => return Outcome::fail(e, ""),
    };
    let open = open_ports(node, &ports, ctx.timeouts.connect).await;
    let (others, others_note) = other_services_node_ports(ctx).await;
    let scan = Scan {
        node,
        scanned: ports.len(),
        allowed_text: describe_allowed(&allowed),
        unexpected: unexpected_ports(&open, &allowed, &others),
        not_judged: not_judged_ports(&open, &allowed, &others),
        open,
        others_note,
    };
    scan.outcome(&check.scan)
}

/// The NodePort of each allowed gateway Service port that has one, with that port.
fn allowed_node_ports(ctx: &Ctx, service_ports: &[u16]) -> Vec<(u16, u16)> {
    let mut allowed = Vec::new();
    for sp in service_ports {
        if let Some(np) = ctx.target.node_port(*sp) {
            allowed.push((np, *sp));
        }
    }
    allowed
}

/// The ports of the `scan` ranges, sorted, each once.
fn ports_to_scan(scan: &[String]) -> Result<Vec<u16>, String> {
    let mut ports: Vec<u16> = Vec::new();
    for r in scan {
        ports.extend(parse_range(r)?);
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// The `ports` of `node` that accept a TCP connection within `timeout`, sorted.
async fn open_ports(node: IpAddr, ports: &[u16], timeout: Duration) -> Vec<u16> {
    let sem = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let mut set = tokio::task::JoinSet::new();
    for &p in ports {
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
    open
}

/// The NodePorts of the cluster's other Services with their names, or none and a
/// note saying why they cannot be read.
async fn other_services_node_ports(ctx: &Ctx) -> (Vec<(u16, String)>, Option<String>) {
    match ctx.target.other_node_ports().await {
        Ok(o) => (o, None),
        Err(e) => (
            Vec::new(),
            Some(format!(
                "the NodePorts of the cluster's other Services cannot be read ({e}): every open port is judged, which is meaningful only on a dedicated cluster"
            )),
        ),
    }
}

/// The Service owning NodePort `p` among `others`, if any.
fn other_service(others: &[(u16, String)], p: u16) -> Option<&String> {
    others.iter().find(|(np, _)| *np == p).map(|(_, s)| s)
}

/// The `open` ports that fail the check: neither allowed nor another Service's.
fn unexpected_ports(open: &[u16], allowed: &[(u16, u16)], others: &[(u16, String)]) -> Vec<u16> {
    open.iter()
        .copied()
        .filter(|p| !allowed.iter().any(|(np, _)| np == p) && other_service(others, *p).is_none())
        .collect()
}

/// The `open` ports not judged, `30080 (Service ns/name)`: other Services' NodePorts
/// that are not allowed ones.
fn not_judged_ports(open: &[u16], allowed: &[(u16, u16)], others: &[(u16, String)]) -> Vec<String> {
    open.iter()
        .filter(|p| !allowed.iter().any(|(np, _)| np == *p))
        .filter_map(|p| other_service(others, *p).map(|s| format!("{p} (Service {s})")))
        .collect()
}

/// `30080 (Service port 80)`, for each allowed NodePort, or why there is none.
fn describe_allowed(allowed: &[(u16, u16)]) -> String {
    if allowed.is_empty() {
        "none (no NodePort for the allowed Service ports)".to_string()
    } else {
        allowed
            .iter()
            .map(|(np, sp)| format!("{np} (Service port {sp})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `80, 30080`, or `none`.
fn port_list(ports: &[u16]) -> String {
    if ports.is_empty() {
        "none".to_string()
    } else {
        ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What the scan of one node found, sorted for judging.
struct Scan {
    node: IpAddr,
    /// How many ports were scanned.
    scanned: usize,
    /// The open ports, sorted.
    open: Vec<u16>,
    allowed_text: String,
    unexpected: Vec<u16>,
    not_judged: Vec<String>,
    /// Why other Services' NodePorts could not be told apart, if so.
    others_note: Option<String>,
}

impl Scan {
    /// The report body: what was scanned, allowed and open, what was not judged, and
    /// the note about other Services.
    fn detail(&self, ranges: &[String]) -> String {
        let mut detail = format!(
            "scanned {} port(s) on {} ({})\nallowed: {}\nopen: {}",
            self.scanned,
            self.node,
            ranges.join(", "),
            self.allowed_text,
            port_list(&self.open)
        );
        if !self.not_judged.is_empty() {
            detail.push_str(&format!(
                "\nnot judged (NodePorts of Services that are not the fixtures'): {}",
                self.not_judged.join(", ")
            ));
        }
        if let Some(n) = &self.others_note {
            detail.push_str(&format!("\nnote: {n}"));
        }
        detail
    }

    /// Passed with the open and not-judged ports when no port is unexpected, else
    /// failed naming the unexpected ones; the detail says what the `ranges` scan found.
    fn outcome(self, ranges: &[String]) -> Outcome {
        let detail = self.detail(ranges);
        if self.unexpected.is_empty() {
            Outcome {
                passed: true,
                message: self.pass_message(),
                detail,
                ..Outcome::pass("")
            }
        } else {
            Outcome::fail(self.fail_message(), detail)
        }
    }

    /// `N ports scanned on <node>; open: …`, with the ports not judged.
    fn pass_message(&self) -> String {
        let mut message = format!(
            "{} ports scanned on {}; open: {}",
            self.scanned,
            self.node,
            port_list(&self.open)
        );
        if !self.not_judged.is_empty() {
            message.push_str(&format!(
                "; not judged (other Services' NodePorts): {}",
                self.not_judged.join(", ")
            ));
        }
        message
    }

    /// `unexpected open port(s) on <node>: …`, with what may answer and the note about
    /// other Services.
    fn fail_message(&self) -> String {
        format!(
            "unexpected open port(s) on {}: {} (only {} may answer){}",
            self.node,
            self.unexpected
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            self.allowed_text,
            self.others_note
                .as_ref()
                .map(|n| format!("; {n}"))
                .unwrap_or_default()
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

//! Container probes as the kubelet runs them (pkg/kubelet/prober): `httpGet` (a 2xx
//! or 3xx answer within `timeoutSeconds`) and `tcpSocket` (a connection), sent from
//! the node to the pod's address. Istio rewrites an injected app's HTTP probes to
//! pilot-agent's port 15020 (`/app-health/...`), so probing the spec as written is
//! what a kubelet does. `exec` and `grpc` probes are not run here: a container with
//! one is reported not ready, with the reason.

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Failure(String),
}

/// The port a probe names: a number, or a container port's name.
fn port(c: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("bad port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("no container port named {name}")),
    }
}

/// The sandbox's node shares its cores with the whole control plane: a probe that a
/// starved pilot-agent answers in 1.5 s would fail a 1 s `timeoutSeconds` (the
/// default) and take the pod out of its endpoints, a failure of the test bed and not
/// of what runs on it (as kube-controller-manager's node grace period). Probes wait
/// at least this long.
const MIN_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn timeout_of(p: &Probe) -> Duration {
    let asked = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    asked.max(MIN_PROBE_TIMEOUT)
}

/// Runs probe `p` of container `c` against the pod at `ip`.
pub async fn run(p: &Probe, c: &Container, ip: IpAddr) -> Verdict {
    let timeout = timeout_of(p);
    if let Some(h) = &p.http_get {
        let port = match port(c, &h.port) {
            Ok(port) => port,
            Err(e) => return Verdict::Failure(e),
        };
        let host = h.host.clone().unwrap_or_else(|| ip.to_string());
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
        let path = h.path.as_deref().unwrap_or("/");
        let url = format!("{scheme}://{host}:{port}{path}");
        return http_get(&url, h.http_headers.iter().flatten(), timeout).await;
    }
    if let Some(t) = &p.tcp_socket {
        let port = match port(c, &t.port) {
            Ok(port) => port,
            Err(e) => return Verdict::Failure(e),
        };
        let addr = SocketAddr::new(ip, port);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Verdict::Success,
            Ok(Err(e)) => Verdict::Failure(format!("tcp {addr}: {e}")),
            Err(_) => Verdict::Failure(format!("tcp {addr}: timed out")),
        };
    }
    Verdict::Failure("exec and grpc probes cannot run in the sandbox (no container runtime)".into())
}

async fn http_get<'a>(
    url: &str,
    headers: impl Iterator<Item = &'a k8s_openapi::api::core::v1::HTTPHeader>,
    timeout: Duration,
) -> Verdict {
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => return Verdict::Failure(e.to_string()),
    };
    let mut req = client.get(url).header("user-agent", "kube-probe/1.36");
    for h in headers {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    match req.send().await {
        Ok(r) if r.status().is_success() || r.status().is_redirection() => Verdict::Success,
        Ok(r) => Verdict::Failure(format!(
            "HTTP probe failed with statuscode: {}",
            r.status().as_u16()
        )),
        Err(e) => Verdict::Failure(format!("Get \"{url}\": {e}")),
    }
}

/// When a probe may first run after the container started.
pub fn initial_delay(p: &Probe) -> Duration {
    Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64)
}

/// The probe's period once it has succeeded (kubelet default 10 s).
pub fn period(p: &Probe) -> Duration {
    Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container() -> Container {
        serde_json::from_value(serde_json::json!({
            "name": "app", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .unwrap()
    }

    #[test]
    fn named_ports_resolve_to_the_container_port() {
        let c = container();
        assert_eq!(port(&c, &IntOrString::String("http".into())), Ok(8080));
        assert_eq!(port(&c, &IntOrString::Int(15021)), Ok(15021));
        assert!(port(&c, &IntOrString::String("nope".into())).is_err());
    }

    #[tokio::test]
    async fn an_http_probe_passes_on_2xx_and_fails_on_5xx_or_no_answer() {
        crate::targets::kind::tools::install_crypto_provider();
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::path("/ok"))
            .respond_with(wiremock::ResponseTemplate::new(200))
            .mount(&server)
            .await;
        wiremock::Mock::given(wiremock::matchers::path("/bad"))
            .respond_with(wiremock::ResponseTemplate::new(503))
            .mount(&server)
            .await;
        let addr = *server.address();
        let probe = |path: &str| -> Probe {
            serde_json::from_value(serde_json::json!({
                "httpGet": {"path": path, "port": addr.port()}
            }))
            .unwrap()
        };
        let c = container();
        assert_eq!(run(&probe("/ok"), &c, addr.ip()).await, Verdict::Success);
        assert!(
            matches!(run(&probe("/bad"), &c, addr.ip()).await, Verdict::Failure(m) if m.contains("503"))
        );
        // Nothing listening: a port just released.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let nobody: Probe = serde_json::from_value(serde_json::json!({
            "httpGet": {"path": "/ok", "port": closed.port()}
        }))
        .unwrap();
        assert!(matches!(
            run(&nobody, &c, closed.ip()).await,
            Verdict::Failure(_)
        ));
        let exec: Probe =
            serde_json::from_value(serde_json::json!({"exec": {"command": ["true"]}})).unwrap();
        assert!(
            matches!(run(&exec, &c, addr.ip()).await, Verdict::Failure(m) if m.contains("exec"))
        );
    }
}

//! The oracle's answer (oracle/input.go, `Output`), as meshcheck reads it.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
pub struct Output {
    pub istio: Build,
    pub rejected: Vec<Rejection>,
    pub warnings: Vec<Rejection>,
    pub gateways: Vec<GatewayConfig>,
    pub simulations: Vec<SimResult>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Build {
    /// The Istio release the build stands for (`1.30.3`).
    pub release: String,
    /// `istio.io/istio@v0.0.0-...`: the module compiled in.
    pub module: String,
    #[serde(default)]
    pub features: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Rejection {
    pub object: String,
    #[serde(default)]
    pub source: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GatewayConfig {
    /// `namespace/name` of the gateway pod.
    pub pod: String,
    pub route_tables: Vec<RouteTable>,
    pub cluster_summary: Vec<Destination>,
    /// Envoy's own JSON, as istiod would send it.
    pub listeners: Vec<Value>,
    pub routes: Vec<Value>,
    pub clusters: Vec<Value>,
    pub endpoints: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct VirtualHost {
    pub name: String,
    pub domains: Vec<String>,
    pub routes: Vec<RouteResult>,
    /// Envoy's require_tls: `NONE`, `EXTERNAL_ONLY` or `ALL`.
    #[serde(default)]
    pub require_tls: String,
    #[serde(default)]
    pub include_request_attempt_count: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SimResult {
    pub id: String,
    pub gateway: String,
    #[serde(default)]
    pub listener: String,
    #[serde(default)]
    pub route_config: String,
    #[serde(default)]
    pub virtual_host: String,
    pub route: Option<RouteResult>,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub unsupported: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RouteResult {
    #[serde(default)]
    pub name: String,
    pub index: usize,
    /// `/apis/networking.istio.io/v1/namespaces/<ns>/virtual-service/<name>`.
    #[serde(default)]
    pub config: String,
    #[serde(rename = "match")]
    pub route_match: Value,
    pub action: String,
    pub prefix_rewrite: Option<String>,
    pub regex_rewrite: Option<RegexRewrite>,
    #[serde(default)]
    pub rewritten_path: String,
    #[serde(default)]
    pub host_rewrite: String,
    #[serde(default)]
    pub destinations: Vec<Destination>,
    pub direct_response: Option<DirectResponse>,
    pub redirect: Option<Value>,
    /// The whole route in Envoy's JSON.
    #[serde(default)]
    pub envoy: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RegexRewrite {
    pub pattern: String,
    pub substitution: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DirectResponse {
    pub status: u32,
    #[serde(default)]
    pub body: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Destination {
    pub cluster: String,
    pub weight: u32,
    pub exists: bool,
    #[serde(default)]
    pub tls: String,
    #[serde(default)]
    pub sni: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    pub address: String,
    pub port: u32,
    #[serde(default)]
    pub tls_mode: String,
}

impl RouteResult {
    /// `VirtualService ns/name` from the route's Istio metadata.
    pub fn virtual_service(&self) -> Option<String> {
        let rest = self.config.strip_prefix("/apis/networking.istio.io/")?;
        let mut parts = rest.split('/').skip(1); // version
        let (_, ns, kind, name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        (kind == "virtual-service").then(|| crate::fixtures::describe("VirtualService", ns, name))
    }
}

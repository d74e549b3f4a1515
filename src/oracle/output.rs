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
    /// The status istiod's gateway controller writes on each Gateway API object
    /// (oracle/gatewaystatus.go); absent from older oracles' answers.
    #[serde(default)]
    pub statuses: Vec<ObjectStatus>,
    /// The inbound connection managers of each sidecar asked about
    /// (oracle/sidecar.go); absent from older oracles' answers.
    #[serde(default)]
    pub sidecars: Vec<SidecarConfig>,
    /// What each sidecar's inbound filters decide for the requests' hops to it
    /// (oracle/sidecar.go sidecarVerdict); absent from older oracles' answers.
    #[serde(default)]
    pub sidecar_verdicts: Vec<SidecarVerdict>,
}

/// istiod's sidecar filters' decision for one hop (input.rs SidecarRequest).
#[derive(Debug, Clone, Deserialize)]
pub struct SidecarVerdict {
    pub id: String,
    /// The inbound filter chain that took the connection.
    #[serde(default)]
    pub chain: String,
    /// Why no chain took it.
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub authz: Option<Authz>,
    #[serde(default)]
    pub unsupported: Vec<String>,
}

/// What istiod sends one workload pod's sidecar, as far as it is compared: the
/// HttpConnectionManagers of its inbound listener.
#[derive(Debug, Clone, Deserialize)]
pub struct SidecarConfig {
    /// `namespace/name` of the pod.
    pub pod: String,
    pub inbound: Vec<InboundHcm>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InboundHcm {
    /// The filter chain's name.
    pub chain: String,
    /// Its destination_port match (0: any).
    #[serde(default)]
    pub port: u32,
    /// The connection manager (its typed_config, Envoy's JSON).
    pub hcm: Value,
}

impl InboundHcm {
    /// Its security filters (CUSTOM's, JWT, RBAC), in istiod's order
    /// (compare_authz::theirs).
    pub fn security_filters(&self) -> Vec<Value> {
        super::compare_authz::theirs(&self.hcm)
    }
}

/// The status istiod writes on one Gateway API object: computed by pilot's gateway
/// controller (pilot/pkg/config/kube/gateway: the status collections of
/// GatewayCollection/FinalGatewayStatusCollection and HTTPRouteCollection & co.).
#[derive(Debug, Clone, Deserialize)]
pub struct ObjectStatus {
    /// `Kind/namespace/name` (`GatewayClass//istio` for a class).
    pub object: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// A Gateway's listeners.
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
    /// A route's status per parent reference.
    #[serde(default)]
    pub parents: Vec<ParentStatus>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ListenerStatus {
    pub name: String,
    #[serde(default)]
    pub attached_routes: i32,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ParentStatus {
    /// `Kind/namespace/name` of the parent (`Gateway/atlas/atlas-gw`).
    pub parent: String,
    #[serde(default)]
    pub section_name: String,
    #[serde(default)]
    pub port: i32,
    #[serde(default)]
    pub controller_name: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

impl Output {
    /// The status istiod writes on `Kind/namespace/name`, if any.
    pub fn status_of(&self, object: &str) -> Option<&ObjectStatus> {
        self.statuses.iter().find(|s| s.object == object)
    }
}

/// The condition of type `type_` in `conditions`, if any.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
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
    /// What the gateway's RBAC filters decided (oracle/rbac.go); None when the matched
    /// filter chain has no RBAC filter (or from older oracles). A denied request is
    /// answered 403 before routing: `route` then says where it would have gone.
    #[serde(default)]
    pub authz: Option<Authz>,
}

/// The RBAC filters' decision for one request, evaluated by the oracle over istiod's
/// envoy.filters.http.rbac configs with Envoy's semantics.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Authz {
    /// How many envoy.filters.http.rbac filters the connection manager has.
    pub filters: usize,
    /// A filter answered itself: 403 (`RBAC: access denied`), or the JWT filter's 401
    /// (403 for audiences).
    pub denied: bool,
    /// `rbac` or `jwt` when denied.
    #[serde(default)]
    pub denied_by: String,
    /// The answer's status when denied.
    #[serde(default)]
    pub status: Option<u16>,
    /// The action of the filter that decided: `DENY` (a policy matched: 403), `ALLOW`
    /// (a policy matched: through; none matched: 403); empty when no filter refused
    /// and none admitted by a policy.
    #[serde(default)]
    pub action: String,
    /// The Envoy policy that matched in the deciding filter
    /// (`ns[NS]-policy[NAME]-rule[I]`); empty when an ALLOW filter matched none.
    #[serde(default)]
    pub policy: String,
    /// The filters' decisions in order, in words.
    #[serde(default)]
    pub why: String,
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
    /// The status Envoy answers when the picked cluster does not exist (a destination
    /// with `exists` false): the route's cluster_not_found_response_code; 0 from older
    /// oracles.
    #[serde(default)]
    pub cluster_not_found_status: u32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authz_is_read_when_the_oracle_gives_it() {
        let sim: SimResult = serde_json::from_value(serde_json::json!({
            "id": "authz::admin", "gateway": "istio-ingress/gw",
            "authz": {"filters": 2, "denied": true, "action": "DENY",
                      "policy": "ns[istio-ingress]-policy[deny-admin]-rule[0]",
                      "why": "RBAC filter 1 (DENY): policy ns[istio-ingress]-policy[deny-admin]-rule[0] matched; 403 RBAC: access denied"},
        }))
        .unwrap();
        let authz = sim.authz.unwrap();
        assert!(authz.denied);
        assert_eq!((authz.filters, authz.action.as_str()), (2, "DENY"));
        assert_eq!(authz.policy, "ns[istio-ingress]-policy[deny-admin]-rule[0]");

        // An ALLOW filter that matched nothing: no policy.
        let sim: SimResult = serde_json::from_value(serde_json::json!({
            "id": "x", "gateway": "g",
            "authz": {"filters": 1, "denied": true, "action": "ALLOW", "why": "..."},
        }))
        .unwrap();
        assert_eq!(sim.authz.unwrap().policy, "");

        let sim: SimResult =
            serde_json::from_value(serde_json::json!({"id": "x", "gateway": "g"})).unwrap();
        assert!(sim.authz.is_none());
    }
}

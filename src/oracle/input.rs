//! The oracle's input (oracle/input.go, `Input`): the fixtures as a cluster would hold
//! them after `kubectl apply`: Namespaces, Services (with the ClusterIP and NodePorts
//! the API server allocates), ServiceAccounts and Istio objects as written;
//! Deployments replaced by the pods meshcheck plans for them (Running, Ready, each
//! with an address) and one EndpointSlice per Service and pod, as the endpoint-slice
//! controller would make. Plus the gateway pods and the requests to simulate.
//!
//! Gateway API objects (`gateway.networking.k8s.io/*`) go into `kube_yaml` as written:
//! istiod reads them from the API server, and the oracle's pilot gateway controller
//! turns them into config and status (oracle/gatewayapi.go). The Services and
//! ServiceAccounts meshcheck adds for a Gateway's automated deployment (typed items
//! not in [`Fixtures::objects`]) go with them.

use crate::fixtures::k8s::{selects, IntOrString};
use crate::fixtures::{Fixtures, Object};
use crate::istio::{Mesh, PodPlan, PodRole};
use crate::suite::{RequestSpec, Suite};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, Clone, Serialize)]
pub struct Input {
    pub kube_yaml: String,
    /// One document per Istio object, so istiod refuses objects one by one.
    pub istio_docs: Vec<IstioDoc>,
    /// `Kind/namespace/name` -> `file:line`.
    pub sources: BTreeMap<String, String>,
    pub gateways: Vec<ProxyInput>,
    /// The workload pods with a sidecar whose inbound security filters are compared
    /// (oracle/sidecar.go): those a policy of their namespace or the root namespace
    /// could attach to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sidecars: Vec<ProxyInput>,
    pub requests: Vec<Request>,
    /// Each request's hops to the sidecars of `sidecars` (oracle/sidecar.go
    /// sidecarVerdict): what istiod's inbound filters decide, against the model.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sidecar_requests: Vec<SidecarRequest>,
    /// The `mesh` key of the fixtures' istio ConfigMap, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh_config: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IstioDoc {
    /// `Kind/namespace/name`.
    pub key: String,
    pub yaml: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyInput {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// The pod's `proxy.istio.io/config` annotation, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy_config: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Request {
    /// The check's full name (`routing::atlas-ui`).
    pub id: String,
    /// `namespace/name` of the gateway pod the NodePort leads to.
    pub gateway: String,
    /// The port inside the gateway pod (the Service's targetPort).
    pub port: u16,
    pub method: String,
    pub scheme: String,
    pub host: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    /// The address the client connects from (Envoy's direct remote address, what
    /// AuthorizationPolicy's `remoteIpBlocks`/`ipBlocks` see); None: the oracle's
    /// default, 127.0.0.1 (the local target's clients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_address: Option<IpAddr>,
}

/// One request as the gateway sends it to a workload pod's sidecar (the model's hop:
/// simulate.rs SidecarHop).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SidecarRequest {
    /// [`sidecar_request_id`].
    pub id: String,
    /// `namespace/name` of the pod.
    pub pod: String,
    /// The pod's port.
    pub port: u16,
    /// Istio mTLS with `peer_principal`'s certificate, or plaintext.
    pub mtls: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub peer_principal: String,
    pub method: String,
    pub host: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    /// The TLS SNI of the mTLS hop.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sni: String,
    /// The gateway pod's address (the sidecar's direct peer).
    pub source_address: IpAddr,
}

/// The id of check `check`'s hop to pod `pod` (`namespace/name`).
pub fn sidecar_request_id(check: &str, pod: &str) -> String {
    format!("{check}@{pod}")
}

/// The address the oracle gives pod `index` of [`Mesh::pods`] (a kind-like pod CIDR).
pub fn pod_ip(index: usize) -> Ipv4Addr {
    let n = index as u32 + 2;
    Ipv4Addr::new(10, 244, (n / 250) as u8, (n % 250) as u8)
}

/// The [`Mesh::pods`] index of an address made by [`pod_ip`].
pub fn pod_index(ip: &str) -> Option<usize> {
    let ip: Ipv4Addr = ip.parse().ok()?;
    let [a, b, c, d] = ip.octets();
    ((a, b) == (10, 244)).then(|| (c as usize * 250 + d as usize).checked_sub(2))?
}

/// Kubernetes kinds given to the oracle as written; Deployments become their pods.
const GIVEN: &[&str] = &["Namespace", "ServiceAccount", "Service", "Deployment"];

/// The Kubernetes Gateway API's group: its objects are given as written.
const GATEWAY_API: &str = "gateway.networking.k8s.io/";

fn is_gateway_api(o: &Object) -> bool {
    o.api_version.starts_with(GATEWAY_API)
}

/// The fixtures' objects the oracle is not given.
pub fn not_given(fx: &Fixtures) -> Vec<&Object> {
    fx.objects
        .iter()
        .filter(|o| {
            !o.api_version.contains(".istio.io/")
                && !is_gateway_api(o)
                && !GIVEN.contains(&o.kind.as_str())
        })
        .collect()
}

/// Whether `fx.objects` holds the object (else meshcheck made it, e.g. for a
/// Gateway's automated deployment).
fn written(fx: &Fixtures, kind: &str, namespace: &str, name: &str) -> bool {
    fx.objects
        .iter()
        .any(|o| o.kind == kind && o.namespace == namespace && o.name == name)
}

fn runs(p: &PodPlan) -> bool {
    matches!(p.role, PodRole::Gateway | PodRole::App)
}

/// Builds the input for `fx` (modelled as `mesh`) and the traffic checks of `suite`.
pub fn build(fx: &Fixtures, mesh: &Mesh, suite: &Suite) -> Input {
    let mut kube = Vec::new();
    let mut istio = Vec::new();
    let mut sources = BTreeMap::new();
    let mut cluster_ips = 0u32;
    for o in &fx.objects {
        sources.insert(
            format!("{}/{}/{}", o.kind, o.namespace, o.name),
            o.source.to_string(),
        );
        if o.api_version.contains(".istio.io/") {
            istio.push(IstioDoc {
                key: format!("{}/{}/{}", o.kind, o.namespace, o.name),
                yaml: with_namespace(o).to_string(),
            });
            continue;
        }
        if is_gateway_api(o) {
            kube.push(with_namespace(o));
            continue;
        }
        match o.kind.as_str() {
            "Namespace" => kube.push(o.raw.clone()),
            "ServiceAccount" => kube.push(with_namespace(o)),
            "Service" => {
                cluster_ips += 1;
                kube.push(allocated_service(with_namespace(o), mesh, cluster_ips));
            }
            _ => {}
        }
    }
    // What meshcheck added (istiod's deployment controller's Services and
    // ServiceAccounts for Gateways of class istio), as the API server would hold it.
    for sa in fx
        .service_accounts
        .iter()
        .filter(|i| !written(fx, "ServiceAccount", &i.namespace, &i.name))
    {
        sources.insert(
            format!("ServiceAccount/{}/{}", sa.namespace, sa.name),
            sa.source.to_string(),
        );
        kube.push(typed_object(
            "v1",
            "ServiceAccount",
            &sa.namespace,
            &sa.spec,
        ));
    }
    for svc in fx
        .services
        .iter()
        .filter(|i| !written(fx, "Service", &i.namespace, &i.name))
    {
        sources.insert(
            format!("Service/{}/{}", svc.namespace, svc.name),
            svc.source.to_string(),
        );
        cluster_ips += 1;
        let v = typed_object("v1", "Service", &svc.namespace, &svc.spec);
        kube.push(allocated_service(v, mesh, cluster_ips));
    }
    for (i, p) in mesh.pods.iter().enumerate().filter(|(_, p)| runs(p)) {
        kube.push(pod_object(i, p));
    }
    kube.extend(endpoint_slices(fx, mesh));
    Input {
        kube_yaml: yaml_stream(&kube),
        istio_docs: istio,
        sources,
        gateways: mesh
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.role == PodRole::Gateway)
            .map(|(i, p)| proxy_input(i, p))
            .collect(),
        sidecars: mesh
            .pods
            .iter()
            .enumerate()
            .filter(|(_, p)| p.role == PodRole::App && p.has_sidecar() && runs(p))
            .filter(|(_, p)| security_policy_in_scope(fx, &p.namespace))
            .map(|(i, p)| proxy_input(i, p))
            .collect(),
        requests: requests(fx, mesh, suite),
        sidecar_requests: sidecar_requests(fx, mesh, suite),
        mesh_config: mesh_config_text(fx),
    }
}

fn proxy_input(i: usize, p: &PodPlan) -> ProxyInput {
    ProxyInput {
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        ip: pod_ip(i).to_string(),
        labels: p.labels.clone().into_iter().collect(),
        service_account: p.service_account.clone(),
        proxy_config: p
            .annotations
            .get(crate::fixtures::mesh_config::PROXY_CONFIG_ANNOTATION)
            .cloned(),
    }
}

/// Whether an AuthorizationPolicy or RequestAuthentication of `namespace` or the root
/// namespace exists (only those can attach to its pods).
fn security_policy_in_scope(fx: &Fixtures, namespace: &str) -> bool {
    let root = fx.root_namespace();
    let in_scope = |ns: &str| ns == namespace || ns == root;
    fx.authorization_policies
        .iter()
        .any(|p| in_scope(&p.namespace))
        || fx
            .request_authentications
            .iter()
            .any(|p| in_scope(&p.namespace))
}

/// The object as stored: a namespaced object applied without a namespace lands in
/// `default` (the loader already decided which).
/// The istio ConfigMap's `mesh` text, when the fixtures carry one.
fn mesh_config_text(fx: &Fixtures) -> Option<String> {
    fx.objects
        .iter()
        .find(|o| crate::fixtures::mesh_config::is_mesh_config(o))
        .and_then(|o| o.raw.pointer("/data/mesh"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn with_namespace(o: &Object) -> Value {
    let mut v = o.raw.clone();
    if !o.namespace.is_empty() && v["metadata"].get("namespace").is_none() {
        v["metadata"]["namespace"] = json!(o.namespace);
    }
    v
}

/// JSON documents are YAML: one stream, `---` between documents.
fn yaml_stream(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// A typed item as a manifest: its fields as meshcheck holds them (unset ones left out).
fn typed_object(api_version: &str, kind: &str, namespace: &str, spec: &impl Serialize) -> Value {
    let mut v = drop_nulls(serde_json::to_value(spec).unwrap_or(Value::Null));
    v["apiVersion"] = json!(api_version);
    v["kind"] = json!(kind);
    v["metadata"]["namespace"] = json!(namespace);
    v
}

fn drop_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, drop_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(drop_nulls).collect()),
        v => v,
    }
}

/// The Service as stored: a ClusterIP, each port's targetPort (the API server defaults
/// it to the port: Kubernetes pkg/apis/core/v1/defaults.go, SetDefaults_Service) and, for
/// NodePort/LoadBalancer, the NodePorts the model allocated.
fn allocated_service(mut v: Value, mesh: &Mesh, n: u32) -> Value {
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let namespace = v["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let spec = &mut v["spec"];
    if spec.get("clusterIP").is_none() {
        spec["clusterIP"] =
            json!(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + n).to_string());
    }
    if let Some(ingress) = mesh
        .ingress_services
        .iter()
        .find(|s| s.name == name && s.namespace == namespace)
    {
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                let port = p.get("port").and_then(Value::as_u64);
                if let Some((_, np, _)) = ingress
                    .ports
                    .iter()
                    .find(|(sp, _, _)| Some(*sp as u64) == port)
                {
                    p["nodePort"] = json!(np);
                }
            }
        }
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            if p.get("targetPort").is_none() {
                if let Some(port) = p.get("port").cloned() {
                    p["targetPort"] = port;
                }
            }
        }
    }
    v
}

fn pod_object(index: usize, p: &PodPlan) -> Value {
    let ip = pod_ip(index).to_string();
    let ports: Vec<Value> = p
        .container_ports
        .iter()
        .map(|(name, port)| match name {
            Some(n) => json!({"name": n, "containerPort": port}),
            None => json!({"containerPort": port}),
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels},
        "spec": {
            "serviceAccountName": p.service_account,
            "nodeName": "meshcheck-node",
            "containers": [{"name": "app", "image": "meshcheck", "ports": ports}],
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    })
}

/// One EndpointSlice per (Service, selected running pod), ports resolved against the pod.
fn endpoint_slices(fx: &Fixtures, mesh: &Mesh) -> Vec<Value> {
    let mut out = Vec::new();
    for s in &fx.services {
        for (i, p) in mesh.pods.iter().enumerate() {
            if !runs(p) || p.namespace != s.namespace || !selects(&s.spec.spec.selector, &p.labels)
            {
                continue;
            }
            let ports: Vec<Value> = s
                .spec
                .spec
                .ports
                .iter()
                .filter_map(|sp| {
                    let t = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
                    let port = p.resolve_port(&t)?;
                    Some(json!({
                        "name": sp.name.clone().unwrap_or_default(),
                        "port": port,
                        "protocol": sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    }))
                })
                .collect();
            out.push(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{}-{}", s.name, p.name),
                    "namespace": s.namespace,
                    "labels": {
                        "kubernetes.io/service-name": s.name,
                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                    },
                },
                "addressType": "IPv4",
                "endpoints": [{
                    "addresses": [pod_ip(i).to_string()],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "targetRef": {"kind": "Pod", "name": p.name, "namespace": p.namespace},
                }],
                "ports": ports,
            }));
        }
    }
    out
}

/// The requests of the suite's http and distribution checks, at the gateway pod and
/// port the ingress Service's NodePort leads to (kube-proxy: Service port ->
/// targetPort of a selected pod). Checks whose port leads nowhere are left out: the
/// comparison reports them from the model's side.
fn requests(fx: &Fixtures, mesh: &Mesh, suite: &Suite) -> Vec<Request> {
    let mut out = Vec::new();
    for (id, req) in suite.checks.iter().flat_map(|c| c.requests()) {
        // A port with no gateway pod behind it is asked nothing (the comparison
        // then expects "no listener").
        let Some((gw, port, node_port)) = ingress_entry(
            fx,
            mesh,
            req.gateway.as_deref(),
            req.service_port(suite.ingress.port),
        ) else {
            continue;
        };
        let mut r = request(id, gw, port, node_port, req);
        // The connection manager normalizes the path before routes and filters see it
        // (istio/normalize.rs, pinned to what Envoy answered); the oracle's route
        // matching and RBAC evaluation take the path as given.
        r.path = crate::istio::normalize::normalize(&r.path, fx.path_normalization());
        out.push(r);
    }
    out
}

/// The hops of the suite's requests to sidecars istiod is asked about (those of
/// [`Input::sidecars`]), each once per check and pod, as the model simulates them.
fn sidecar_requests(fx: &Fixtures, mesh: &Mesh, suite: &Suite) -> Vec<SidecarRequest> {
    let mut out: Vec<SidecarRequest> = Vec::new();
    for (id, req) in suite.checks.iter().flat_map(|c| c.requests()) {
        let mut sim = crate::analysis::sim_request(req, suite.ingress.port);
        sim.assume_certificates = true;
        for hop in mesh
            .simulate(&sim)
            .outcomes()
            .iter()
            .flat_map(|b| b.sidecar_hops.iter())
        {
            let p = &mesh.pods[hop.pod];
            if !security_policy_in_scope(fx, &p.namespace) {
                continue;
            }
            let pod = format!("{}/{}", p.namespace, p.name);
            let hop_id = sidecar_request_id(&id, &pod);
            if out.iter().any(|r| r.id == hop_id) {
                continue;
            }
            let gw = &mesh.pods[hop.gateway];
            out.push(SidecarRequest {
                id: hop_id,
                pod,
                port: hop.port,
                mtls: hop.mtls,
                peer_principal: if hop.mtls {
                    gw.spiffe_id(&mesh.trust_domain)
                } else {
                    String::new()
                },
                method: hop.method.clone(),
                host: hop.authority.clone(),
                path: hop.path.clone(),
                headers: hop
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.join(",")))
                    .collect(),
                sni: hop.sni.clone(),
                source_address: IpAddr::V4(pod_ip(hop.gateway)),
            });
        }
    }
    out
}

/// (gateway pod `ns/name`, port in the pod, NodePort) for a gateway Service port.
pub fn ingress_entry(
    fx: &Fixtures,
    mesh: &Mesh,
    gateway: Option<&str>,
    service_port: u16,
) -> Option<(String, u16, u16)> {
    let (ingress, node_port) = mesh.node_port_via(gateway, service_port)?;
    let svc = fx
        .services
        .iter()
        .find(|s| s.name == ingress.name && s.namespace == ingress.namespace)?;
    let sp = svc
        .spec
        .spec
        .ports
        .iter()
        .find(|p| p.port == service_port)?;
    let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
    mesh.pods.iter().find_map(|p| {
        let selected = p.role == PodRole::Gateway
            && p.namespace == svc.namespace
            && selects(&svc.spec.spec.selector, &p.labels);
        let port = p.resolve_port(&target)?;
        selected.then(|| (format!("{}/{}", p.namespace, p.name), port, node_port))
    })
}

fn request(id: String, gateway: String, port: u16, node_port: u16, r: &RequestSpec) -> Request {
    Request {
        id,
        gateway,
        port,
        method: r.method.clone().unwrap_or_else(|| "GET".into()),
        scheme: if r.is_https() { "https" } else { "http" }.into(),
        host: r
            .host
            .clone()
            .unwrap_or_else(|| format!("node:{node_port}")),
        // The query too: routes match on it (queryParams), as in the model.
        path: r.path_and_query(),
        headers: r.header_map(),
        // `request.source`; none: the oracle's default (127.0.0.1), as the
        // simulation's.
        source_address: r.source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses_round_trip() {
        for i in [0, 1, 247, 248, 249, 250, 1000] {
            assert_eq!(pod_index(&pod_ip(i).to_string()), Some(i), "index {i}");
        }
        assert_eq!(pod_index("127.0.0.1"), None);
        assert_eq!(pod_index("10.244.0.1"), None);
    }

    #[test]
    fn a_request_names_its_source_address_only_when_set() {
        let mut req = Request {
            id: "c".into(),
            gateway: "istio-system/gw".into(),
            port: 8080,
            method: "GET".into(),
            scheme: "http".into(),
            host: "a.example.com".into(),
            path: "/".into(),
            headers: BTreeMap::new(),
            source_address: None,
        };
        assert!(serde_json::to_value(&req)
            .unwrap()
            .get("source_address")
            .is_none());
        req.source_address = Some("203.0.113.7".parse().unwrap());
        assert_eq!(
            serde_json::to_value(&req).unwrap()["source_address"],
            json!("203.0.113.7")
        );
    }

    fn object(api_version: &str, kind: &str, namespace: &str, name: &str, raw: Value) -> Object {
        Object {
            kind: kind.into(),
            api_version: api_version.into(),
            namespace: namespace.into(),
            name: name.into(),
            source: crate::fixtures::Source::new(std::path::Path::new("f.yaml"), 1),
            raw,
        }
    }

    #[test]
    fn gateway_api_objects_and_generated_services_go_to_kube_yaml() {
        let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                           "metadata": {"name": "r"}, "spec": {}});
        let netpol = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                            "metadata": {"name": "p", "namespace": "atlas"}});
        let mut fx = Fixtures::default();
        fx.objects.push(object(
            "gateway.networking.k8s.io/v1",
            "HTTPRoute",
            "atlas",
            "r",
            route,
        ));
        fx.objects.push(object(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "atlas",
            "p",
            netpol,
        ));
        // As the loader adds it for Gateway atlas/gw (not among the objects written).
        let spec: crate::fixtures::k8s::Service = serde_json::from_value(json!({
            "metadata": {"name": "gw-istio", "labels": {"gateway.istio.io/managed": "istio.io-gateway-controller"}},
            "spec": {"selector": {"gateway.networking.k8s.io/gateway-name": "gw"},
                     "ports": [{"name": "http", "port": 80}]}}))
        .unwrap();
        fx.services.push(crate::fixtures::Item {
            kind: "Service".into(),
            namespace: "atlas".into(),
            name: "gw-istio".into(),
            source: Default::default(),
            spec,
        });
        let mesh = Mesh::build(&fx);
        let suite = crate::suite::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("suites/ingress.yaml"),
        )
        .unwrap();
        let input = build(&fx, &mesh, &suite);
        assert!(input.istio_docs.is_empty(), "{:?}", input.istio_docs);
        let docs: Vec<Value> = input
            .kube_yaml
            .split("\n---\n")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let route = docs
            .iter()
            .find(|d| d["kind"] == "HTTPRoute")
            .expect("the HTTPRoute");
        assert_eq!(route["metadata"]["namespace"], "atlas");
        let svc = docs
            .iter()
            .find(|d| d["kind"] == "Service")
            .expect("the generated Service");
        assert_eq!(svc["metadata"]["name"], "gw-istio");
        assert_eq!(svc["metadata"]["namespace"], "atlas");
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80, "{svc}");
        assert!(svc["spec"]["clusterIP"].is_string(), "{svc}");
        // Negative: a kind istiod does not read is still not given, and said so.
        assert!(!docs.iter().any(|d| d["kind"] == "NetworkPolicy"));
        let not: Vec<_> = not_given(&fx).iter().map(|o| o.kind.clone()).collect();
        assert_eq!(not, ["NetworkPolicy"]);
    }
}

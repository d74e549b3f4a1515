//! The Kubernetes Gateway API through the Istio oracle: a hand-written cluster (as
//! meshcheck's input builder writes one: Namespaces, Services, Pods, EndpointSlices and
//! the Gateway API objects as written) given to istiod's own gateway controller and
//! config generation (oracle/gatewayapi.go, oracle/gatewaystatus.go). Needs the oracle
//! (see tests/common/oracle.rs); without Go these tests say so on stderr and pass
//! without running.

mod common;
use common::oracle::{note_unavailable, oracle};
use meshcheck::oracle::input::{Input, ProxyInput, Request};
use meshcheck::oracle::output::{condition, Output, RouteResult};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The oracle, or `None` (said on stderr) when it cannot run here.
fn bin() -> Option<&'static Path> {
    match oracle() {
        Ok(b) => Some(b),
        Err(why) => {
            note_unavailable(why);
            None
        }
    }
}

fn service(ns: &str, name: &str, selector: Value, ports: Value, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
           "spec": {"clusterIP": ip, "selector": selector, "ports": ports}})
}

fn pod(ns: &str, name: &str, labels: Value, sa: &str, ip: &str, ports: &[u16]) -> Value {
    let ports: Vec<Value> = ports.iter().map(|p| json!({"containerPort": p})).collect();
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": labels},
           "spec": {"serviceAccountName": sa, "nodeName": "meshcheck-node",
                    "containers": [{"name": "app", "image": "meshcheck", "ports": ports}]},
           "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

fn endpoint_slice(ns: &str, service: &str, pod: &str, ip: &str, ports: &[(&str, u16)]) -> Value {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": format!("{service}-{pod}"), "namespace": ns,
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4",
           "endpoints": [{"addresses": [ip], "conditions": {"ready": true},
                          "targetRef": {"kind": "Pod", "name": pod, "namespace": ns}}],
           "ports": ports})
}

/// The labels of the pods of Istio's automated deployment for Gateway `atlas-gw`.
fn gateway_pod_labels() -> BTreeMap<String, String> {
    [
        ("gateway.networking.k8s.io/gateway-name", "atlas-gw"),
        ("gateway.istio.io/managed", "istio.io-gateway-controller"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Gateway `atlas/atlas-gw` (class istio, HTTP on 80, `listener_hostname` if any), its
/// deployment's Service `atlas-gw-istio` and pod, Service `nb-rest` in `atlas` and in
/// `other`, and `objects` (routes, grants).
fn cluster(listener_hostname: Option<&str>, objects: Vec<Value>) -> Input {
    let mut listener = json!({"name": "http", "port": 80, "protocol": "HTTP"});
    if let Some(h) = listener_hostname {
        listener["hostname"] = json!(h);
    }
    let gw_labels = json!(gateway_pod_labels());
    let http_8080 = json!([{"name": "http", "port": 80, "targetPort": 8080}]);
    let mut docs = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "atlas"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}),
        service(
            "atlas",
            "nb-rest",
            json!({"app": "nb-rest"}),
            http_8080.clone(),
            "10.96.0.11",
        ),
        service(
            "other",
            "nb-rest",
            json!({"app": "nb-rest"}),
            http_8080,
            "10.96.0.13",
        ),
        // As istiod's deployment controller makes it: one port per listener, and 15021.
        service(
            "atlas",
            "atlas-gw-istio",
            json!({"gateway.networking.k8s.io/gateway-name": "atlas-gw"}),
            json!([{"name": "status-port", "port": 15021, "targetPort": 15021, "appProtocol": "tcp"},
                   {"name": "http", "port": 80, "targetPort": 80, "appProtocol": "http"}]),
            "10.96.0.12",
        ),
        pod(
            "atlas",
            "nb-rest-0",
            json!({"app": "nb-rest"}),
            "default",
            "10.244.0.2",
            &[8080],
        ),
        pod(
            "other",
            "nb-rest-0",
            json!({"app": "nb-rest"}),
            "default",
            "10.244.0.4",
            &[8080],
        ),
        pod(
            "atlas",
            "atlas-gw-istio-0",
            gw_labels,
            "atlas-gw-istio",
            "10.244.0.3",
            &[80, 15021],
        ),
        endpoint_slice(
            "atlas",
            "nb-rest",
            "nb-rest-0",
            "10.244.0.2",
            &[("http", 8080)],
        ),
        endpoint_slice(
            "other",
            "nb-rest",
            "nb-rest-0",
            "10.244.0.4",
            &[("http", 8080)],
        ),
        endpoint_slice(
            "atlas",
            "atlas-gw-istio",
            "atlas-gw-istio-0",
            "10.244.0.3",
            &[("http", 80), ("status-port", 15021)],
        ),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "atlas-gw", "namespace": "atlas"},
               "spec": {"gatewayClassName": "istio", "listeners": [listener]}}),
    ];
    docs.extend(objects);
    Input {
        kube_yaml: docs
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n---\n"),
        istio_docs: vec![],
        sources: BTreeMap::new(),
        gateways: vec![ProxyInput {
            name: "atlas-gw-istio-0".into(),
            namespace: "atlas".into(),
            ip: "10.244.0.3".into(),
            labels: gateway_pod_labels(),
            service_account: "atlas-gw-istio".into(),
            proxy_config: None,
        }],
        sidecars: vec![],
        sidecar_requests: vec![],
        requests: ["/atlas-rest/items", "/atlas-restless"]
            .iter()
            .map(|path| Request {
                id: path.to_string(),
                gateway: "atlas/atlas-gw-istio-0".into(),
                port: 80,
                method: "GET".into(),
                scheme: "http".into(),
                host: "atlas.example.com".into(),
                path: path.to_string(),
                headers: BTreeMap::new(),
                source_address: None,
            })
            .collect(),
        mesh_config: None,
    }
}

/// HTTPRoute `atlas/nb-rest`: PathPrefix /atlas-rest, rewritten to `/`, to Service
/// nb-rest port 80 (in `backend_ns` when given).
fn route(hostnames: &[&str], backend_ns: Option<&str>) -> Value {
    let mut backend = json!({"name": "nb-rest", "port": 80});
    if let Some(ns) = backend_ns {
        backend["namespace"] = json!(ns);
    }
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": "nb-rest", "namespace": "atlas"},
           "spec": {"parentRefs": [{"name": "atlas-gw"}], "hostnames": hostnames,
                    "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/atlas-rest"}}],
                               "filters": [{"type": "URLRewrite", "urlRewrite": {"path": {
                                   "type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
                               "backendRefs": [backend]}]}})
}

fn grant_from_atlas() -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
           "metadata": {"name": "from-atlas", "namespace": "other"},
           "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "atlas"}],
                    "to": [{"group": "", "kind": "Service"}]}})
}

fn ask(bin: &Path, input: &Input) -> Output {
    meshcheck::oracle::run(bin, input, false).expect("the oracle answers")
}

/// The route istiod's config sends request `id` to (panics with the answer if none).
fn routed<'a>(out: &'a Output, id: &str) -> &'a RouteResult {
    let sim = out.simulations.iter().find(|s| s.id == id).unwrap();
    sim.route
        .as_ref()
        .unwrap_or_else(|| panic!("no route for {id}: {sim:?}"))
}

/// (status, reason) of condition `type_` of the HTTPRoute's status for its only parent.
fn route_condition(out: &Output, type_: &str) -> (String, String) {
    let st = out
        .status_of("HTTPRoute/atlas/nb-rest")
        .unwrap_or_else(|| panic!("no status for the HTTPRoute: {:?}", out.statuses));
    assert_eq!(st.parents.len(), 1, "{st:?}");
    assert_eq!(st.parents[0].parent, "Gateway/atlas/atlas-gw");
    let c = condition(&st.parents[0].conditions, type_)
        .unwrap_or_else(|| panic!("no {type_} in {st:?}"));
    (c.status.clone(), c.reason.clone())
}

#[test]
fn an_httproute_with_a_prefix_rewrite_reaches_its_backend_as_istiod_routes_it() {
    let Some(bin) = bin() else { return };
    let out = ask(bin, &cluster(None, vec![route(&[], None)]));
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    let r = routed(&out, "/atlas-rest/items");
    assert_eq!(r.action, "route");
    // pilot/pkg/config/kube/gateway/conversion.go: ReplacePrefixMatch "/" becomes a
    // regex rewrite; the match is a path_separated_prefix.
    let rr = r.regex_rewrite.as_ref().expect("a regex rewrite");
    assert_eq!(rr.pattern, "^/atlas-rest(/?)(.*)");
    assert_eq!(rr.substitution, "/\\2");
    assert_eq!(r.route_match["path_separated_prefix"], "/atlas-rest");
    assert_eq!(r.rewritten_path, "/items");
    assert_eq!(r.destinations.len(), 1);
    assert_eq!(
        r.destinations[0].cluster,
        "outbound|80||nb-rest.atlas.svc.cluster.local"
    );
    assert!(r.destinations[0].exists);
    assert_eq!(r.destinations[0].endpoints[0].address, "10.244.0.2");
    assert_eq!(r.cluster_not_found_status, 500);
    // Negative: a path that only starts with the prefix is not under it.
    let sim = out
        .simulations
        .iter()
        .find(|s| s.id == "/atlas-restless")
        .unwrap();
    assert!(sim.route.is_none(), "{sim:?}");
    assert!(sim.error.contains("no route"), "{sim:?}");

    // Status, as istiod writes it.
    assert_eq!(
        route_condition(&out, "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(
        route_condition(&out, "ResolvedRefs"),
        ("True".into(), "ResolvedRefs".into())
    );
    let gw = out
        .status_of("Gateway/atlas/atlas-gw")
        .expect("Gateway status");
    assert_eq!(
        condition(&gw.conditions, "Accepted").unwrap().status,
        "True"
    );
    assert_eq!(
        condition(&gw.conditions, "Programmed").unwrap().status,
        "True"
    );
    assert_eq!(gw.listeners.len(), 1);
    assert_eq!(gw.listeners[0].attached_routes, 1);
    assert_eq!(
        condition(&gw.listeners[0].conditions, "Conflicted")
            .unwrap()
            .status,
        "False"
    );
    // istiod's class controller creates GatewayClass istio when the fixtures do not.
    let class = out.status_of("GatewayClass//istio").expect("class status");
    assert_eq!(
        condition(&class.conditions, "Accepted").unwrap().status,
        "True"
    );
}

#[test]
fn a_backend_in_another_namespace_needs_a_reference_grant() {
    let Some(bin) = bin() else { return };
    let out = ask(bin, &cluster(None, vec![route(&[], Some("other"))]));
    assert_eq!(
        route_condition(&out, "ResolvedRefs"),
        ("False".into(), "RefNotPermitted".into())
    );
    // The route stays, toward a cluster that does not exist: Envoy answers 500.
    let r = routed(&out, "/atlas-rest/items");
    assert_eq!(r.destinations.len(), 1);
    assert!(!r.destinations[0].exists, "{:?}", r.destinations);
    assert_eq!(r.cluster_not_found_status, 500);

    let out = ask(
        bin,
        &cluster(None, vec![route(&[], Some("other")), grant_from_atlas()]),
    );
    assert_eq!(
        route_condition(&out, "ResolvedRefs"),
        ("True".into(), "ResolvedRefs".into())
    );
    let r = routed(&out, "/atlas-rest/items");
    assert_eq!(
        r.destinations[0].cluster,
        "outbound|80||nb-rest.other.svc.cluster.local"
    );
    assert!(r.destinations[0].exists);
    assert_eq!(r.destinations[0].endpoints[0].address, "10.244.0.4");
}

#[test]
fn a_route_whose_hostnames_no_listener_takes_is_not_accepted() {
    let Some(bin) = bin() else { return };
    let out = ask(
        bin,
        &cluster(
            Some("other.example.com"),
            vec![route(&["atlas.example.com"], None)],
        ),
    );
    assert_eq!(
        route_condition(&out, "Accepted"),
        ("False".into(), "NoMatchingListenerHostname".into())
    );
    let gw = out.status_of("Gateway/atlas/atlas-gw").unwrap();
    assert_eq!(gw.listeners[0].attached_routes, 0);
    let sim = out
        .simulations
        .iter()
        .find(|s| s.id == "/atlas-rest/items")
        .unwrap();
    assert!(sim.route.is_none(), "{sim:?}");

    // Negative: the listener's hostname among the route's: accepted and routed.
    let out = ask(
        bin,
        &cluster(
            Some("atlas.example.com"),
            vec![route(&["atlas.example.com"], None)],
        ),
    );
    assert_eq!(
        route_condition(&out, "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(routed(&out, "/atlas-rest/items").rewritten_path, "/items");
}

#[test]
fn gateway_api_kinds_istiod_does_not_read_are_rejected_and_v1beta1_is_read_as_v1() {
    let Some(bin) = bin() else { return };
    let udp = json!({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "UDPRoute",
                     "metadata": {"name": "dns", "namespace": "atlas"},
                     "spec": {"parentRefs": [{"name": "atlas-gw"}], "rules": [{"backendRefs": [{"name": "nb-rest", "port": 53}]}]}});
    let mut beta = route(&[], None);
    beta["apiVersion"] = json!("gateway.networking.k8s.io/v1beta1");
    let out = ask(bin, &cluster(None, vec![beta, udp]));
    assert_eq!(out.rejected.len(), 1, "{:?}", out.rejected);
    assert_eq!(out.rejected[0].object, "UDPRoute/atlas/dns");
    assert!(
        out.rejected[0].reason.contains("does not read"),
        "{:?}",
        out.rejected
    );
    // The v1beta1 HTTPRoute is taken (the CRDs convert between versions by apiVersion).
    assert_eq!(
        route_condition(&out, "Accepted"),
        ("True".into(), "Accepted".into())
    );
    assert_eq!(routed(&out, "/atlas-rest/items").rewritten_path, "/items");
}

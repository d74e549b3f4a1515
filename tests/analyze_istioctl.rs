//! `meshcheck analyze` on istioctl analyze's own scenarios (tests/data/istioctl, copied
//! from Istio's analyzer test data): for the codes meshcheck maps to an IST code, the
//! findings are exactly the messages istioctl's analyzers_test.go expects of the same
//! input: each object istioctl reports is found (positive), every other object is not
//! (negative). Where meshcheck says something else than istioctl, the case says why.

mod common;
use common::*;
use meshcheck::analysis::{analyze, Finding};
use meshcheck::fixtures::load_dirs;
use meshcheck::istio::Mesh;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    root().join("tests/data/istioctl").join(name)
}

fn suite() -> meshcheck::suite::Suite {
    meshcheck::suite::load(&root().join("suites/ingress.yaml")).unwrap()
}

/// Every finding of the files analysed together.
fn findings(files: &[&str]) -> Vec<Finding> {
    let paths: Vec<PathBuf> = files.iter().map(|f| data(f)).collect();
    let fx = load_dirs(&paths).unwrap_or_else(|e| panic!("{files:?}: {e}"));
    analyze(&fx, &Mesh::build(&fx), &suite())
}

/// The (code, object) pairs among `codes`.
fn found(all: &[Finding], codes: &[&str]) -> BTreeSet<(String, String)> {
    all.iter()
        .filter(|f| codes.contains(&f.code))
        .map(|f| (f.code.to_string(), f.object.clone()))
        .collect()
}

#[track_caller]
fn assert_exactly(files: &[&str], codes: &[&str], want: &[(&str, &str)]) -> Vec<Finding> {
    let all = findings(files);
    let want: BTreeSet<(String, String)> = want
        .iter()
        .map(|(c, o)| (c.to_string(), o.to_string()))
        .collect();
    let got = found(&all, codes);
    assert_eq!(
        got,
        want,
        "{files:?}:\n{}",
        all.iter()
            .filter(|f| codes.contains(&f.code))
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    all
}

const GATEWAY_SELECTOR: &[&str] = &["MC108", "MC109"];

// --- gateway.IngressGatewayPortAnalyzer (gateway/gateway.go) ----------------------------

#[test]
fn gateway_selecting_no_workload_is_mc108() {
    // gatewayNoWorkload: IST0101 Gateway httpbin-gateway.
    assert_exactly(
        &["gateway-no-workload.yaml", "defaults.yaml"],
        GATEWAY_SELECTOR,
        &[("MC108", "Gateway default/httpbin-gateway")],
    );
}

#[test]
fn gateway_port_not_on_the_service_is_mc109_and_a_correct_one_is_not() {
    // gatewayBadPort: IST0162; gatewayCorrectPort: nothing.
    assert_exactly(
        &["gateway-no-port.yaml", "defaults.yaml"],
        GATEWAY_SELECTOR,
        &[("MC109", "Gateway default/httpbin-gateway")],
    );
    assert_exactly(
        &["gateway-correct-port.yaml", "defaults.yaml"],
        GATEWAY_SELECTOR,
        &[],
    );
}

#[test]
fn a_bare_gateway_pod_is_a_gateway_workload() {
    // gatewayCustomIngressGateway: the gateway is a bare Pod running istio-proxy, its
    // Service translates 80 to the server's 8003: nothing to report (meshcheck used to
    // say MC108 "matches no gateway pod").
    assert_exactly(
        &["gateway-custom-ingressgateway.yaml", "defaults.yaml"],
        GATEWAY_SELECTOR,
        &[],
    );
    assert_exactly(
        &[
            "gateway-custom-ingressgateway-translation.yaml",
            "defaults.yaml",
        ],
        GATEWAY_SELECTOR,
        &[],
    );
}

#[test]
fn a_bare_gateway_pods_service_without_the_port_is_mc109() {
    for file in [
        "gateway-custom-ingressgateway-badport.yaml",
        "gateway-custom-ingressgateway-badport-notarget.yaml",
    ] {
        assert_exactly(
            &[file, "defaults.yaml"],
            GATEWAY_SELECTOR,
            &[("MC109", "Gateway default/httpbin-gateway")],
        );
    }
    // gatewayServiceMatchPod: only the Service selecting the Gateway's own pods counts.
    assert_exactly(
        &[
            "gateway-custom-ingressgateway-svcselector.yaml",
            "defaults.yaml",
        ],
        GATEWAY_SELECTOR,
        &[("MC109", "Gateway default/httpbin8002-gateway")],
    );
}

// --- gateway.SecretAnalyzer (gateway/secret.go) -----------------------------------------

#[test]
fn credential_names_resolve_in_the_gateway_pods_namespace() {
    // gatewaySecret: IST0101 for defaultgateway-bogusCredentialName (credentialName:
    // MC130), and for customgateway-wrongnamespace and bogusgateway, whose selector
    // `istio: custom-gateway` matches no pod (the file's Pod is labelled `myapp`), so
    // istioctl reports the selector (secret.go, gwNs == ""): meshcheck's MC108.
    // meshcheck says one thing more: the Secret of defaultgateway-noerrors holds a valid
    // certificate but the key of another one (`openssl x509 -pubkey` and `openssl pkey
    // -pubout` differ), which istioctl does not check and Envoy refuses (MC132).
    assert_exactly(
        &["gateway-secrets.yaml", "defaults.yaml"],
        &["MC108", "MC130", "MC131", "MC132"],
        &[
            ("MC132", "Gateway default/defaultgateway-noerrors"),
            (
                "MC130",
                "Gateway default/defaultgateway-bogusCredentialName",
            ),
            ("MC108", "Gateway default/customgateway-wrongnamespace"),
            ("MC108", "Gateway default/bogusgateway"),
        ],
    );
}

#[test]
fn invalid_credentials_are_mc131() {
    // gatewaySecretValidations: IST0161 for the invalid keys, missing keys, an invalid
    // certificate and an expired one.
    assert_exactly(
        &["gateway-secrets-validation.yaml", "defaults.yaml"],
        &["MC130", "MC131", "MC132"],
        &[
            ("MC131", "Gateway default/defaultgateway-invalid-keys"),
            ("MC131", "Gateway default/defaultgateway-missing-keys"),
            ("MC131", "Gateway default/defaultgateway-invalid-cert"),
            ("MC131", "Gateway default/defaultgateway-expired"),
        ],
    );
}

// --- deployment.ServiceAssociationAnalyzer (deployment/services.go) ---------------------

#[test]
fn services_disagreeing_on_a_workloads_port_are_mc127_and_mc128() {
    // serviceMultipleDeployments: IST0116 for the two Deployments whose Services use one
    // port with two protocols, IST0137 for the one whose Services send one targetPort
    // from two ports; the other Deployments, Services in another namespace
    // (deploymentMultiServicesInDifferentNamespace) and Services without selector
    // (serviceWithNoSelector): nothing.
    const CODES: &[&str] = &["MC127", "MC128"];
    let all = assert_exactly(
        &["deployment-multi-service.yaml"],
        CODES,
        &[
            ("MC127", "Deployment bookinfo/multiple-svc-multiple-prot"),
            ("MC127", "Deployment bookinfo/multiple-without-port"),
            ("MC128", "Deployment bookinfo/conflicting-ports"),
        ],
    );
    let f = all.iter().find(|f| f.code == "MC128").unwrap();
    assert!(
        f.message.starts_with("Services bookinfo/conflicting-ports-1, bookinfo/conflicting-ports-2 send targetPort 9080 from different ports"),
        "{f}"
    );
    assert_exactly(&["deployment-multi-service-different-ns.yaml"], CODES, &[]);
    assert_exactly(&["deployment-service-no-selector.yaml"], CODES, &[]);
}

// --- gateway.CertificateAnalyzer (gateway/certificate.go) -----------------------------

#[test]
fn gateways_sharing_a_certificate_on_the_same_workloads_are_mc133() {
    // gatewayDuplicateCertificate: IST0138 for the Gateways whose selector is a subset
    // of another's that serves the same credentialName (or the same file pair); the
    // others (different certificates, selectors that are no subset) are not reported.
    let all = assert_exactly(
        &["gateway-duplicate-certificate.yaml"],
        &["MC133"],
        &[
            ("MC133", "Gateway istio-system/gateway-01-test-01"),
            ("MC133", "Gateway istio-system/gateway-02-test-01"),
            ("MC133", "Gateway istio-system/gateway-01-test-02"),
            ("MC133", "Gateway default/gateway-01-test-03"),
        ],
    );
    let f = all
        .iter()
        .find(|f| f.object == "Gateway istio-system/gateway-01-test-01" && f.code == "MC133")
        .unwrap();
    assert_eq!(f.severity, meshcheck::analysis::Severity::Warning);
    assert!(
        f.message.contains("credentialName test-01-wildcard-cert")
            && f.message
                .contains("Gateway istio-system/gateway-02-test-01"),
        "{f}"
    );
}

// --- virtualservice.ConflictingMeshGatewayHostsAnalyzer ---------------------------------

#[test]
fn virtualservices_claiming_one_host_on_the_mesh_gateway_are_mc113() {
    // virtualServiceConflictingMeshGatewayHosts.
    let all = assert_exactly(
        &["virtualservice_conflictingmeshgatewayhosts.yaml"],
        &["MC113"],
        &[
            ("MC113", "VirtualService team3/ratings"),
            ("MC113", "VirtualService team4/ratings"),
            ("MC113", "VirtualService foo/ratings"),
            ("MC113", "VirtualService bar/ratings"),
            ("MC113", "VirtualService foo/productpage"),
            ("MC113", "VirtualService foo/bogus-productpage"),
            ("MC113", "VirtualService team2/ratings"),
        ],
    );
    let f = all
        .iter()
        .find(|f| f.code == "MC113" && f.object == "VirtualService foo/productpage")
        .unwrap();
    assert_eq!(
        f.message,
        "the VirtualServices foo/bogus-productpage,foo/productpage bound to the mesh gateway define the same host */productpage.foo.svc.cluster.local"
    );
    assert_eq!(f.at.line, 1, "{f}");
}

#[test]
fn export_to_separates_mesh_hosts() {
    // virtualServiceConflictingMeshGatewayHostsWithExportTo: productpage-b (exported
    // to different namespaces) does not conflict.
    assert_exactly(
        &["virtualservice_conflictingmeshgatewayhosts_with_exportto.yaml"],
        &["MC113"],
        &[
            ("MC113", "VirtualService foo/productpage"),
            ("MC113", "VirtualService bar/productpage"),
            ("MC113", "VirtualService foo/productpage-c"),
            ("MC113", "VirtualService bar/productpage-c"),
            ("MC113", "VirtualService foo/productpage-d"),
            ("MC113", "VirtualService bar/productpage-d"),
        ],
    );
}

// --- virtualservice.DestinationHostAnalyzer and DestinationRuleAnalyzer ------------------

#[test]
fn destination_hosts_mirrors_service_entries_and_export_to() {
    // virtualServiceDestinationHosts: IST0101 for reviews-bookinfo-other (a
    // ServiceEntry exported elsewhere), reviews-mirror-bogushost (a mirror host),
    // reviews-bogusport (host:port), cross-namespace-details (a Service exported by
    // annotation to another namespace), hello-export-to-bogus (the VirtualService's own
    // exportTo); IST0112 for reviews-2port-missing. istioctl also says IST0101 twice of
    // reviews-bogushost, whose first route entry has no destination: istiod refuses
    // that object, which meshcheck says (MC304) instead of analysing it.
    // Every other VirtualService (Service, ServiceEntry and wildcard ServiceEntry
    // hosts, mirrors to existing hosts, exportTo that lets them see) has no finding.
    let all = assert_exactly(
        &["virtualservice_destinationhosts.yaml"],
        &["MC103", "MC104", "MC304"],
        &[
            ("MC304", "VirtualService default/reviews-bogushost"),
            ("MC103", "VirtualService default/reviews-bookinfo-other"),
            ("MC103", "VirtualService default/reviews-mirror-bogushost"),
            ("MC104", "VirtualService default/reviews-bogusport"),
            ("MC104", "VirtualService default/reviews-2port-missing"),
            (
                "MC103",
                "VirtualService istio-system/cross-namespace-details",
            ),
            ("MC103", "VirtualService hello/hello-export-to-bogus"),
        ],
    );
    let msg = |code: &str, obj: &str| {
        all.iter()
            .find(|f| f.code == code && f.object == obj)
            .map(|f| (f.message.clone(), f.istioctl))
            .unwrap()
    };
    let (m, ctl) = msg("MC103", "VirtualService default/reviews-mirror-bogushost");
    assert!(m.starts_with("http[0].mirror host `reviews-bogus`"), "{m}");
    assert_eq!(ctl, Some("IST0101 ReferencedResourceNotFound"));
    // A mirror to nowhere mirrors nothing, the route still answers: a warning; a
    // route's missing port fails its requests: an error.
    let severity = |code: &str, obj: &str| {
        all.iter()
            .find(|f| f.code == code && f.object == obj)
            .map(|f| f.severity)
            .unwrap()
    };
    use meshcheck::analysis::Severity;
    assert_eq!(
        severity("MC103", "VirtualService default/reviews-mirror-bogushost"),
        Severity::Warning
    );
    assert_eq!(
        severity("MC104", "VirtualService default/reviews-bogusport"),
        Severity::Error
    );
    let (m, _) = msg(
        "MC103",
        "VirtualService istio-system/cross-namespace-details",
    );
    assert!(
        m.contains("declared by Service default/details (exported to banana) but not visible from namespace istio-system"),
        "{m}"
    );
    let (_, ctl) = msg("MC104", "VirtualService default/reviews-2port-missing");
    assert_eq!(
        ctl,
        Some("IST0112 VirtualServiceDestinationPortSelectorRequired")
    );
}

#[test]
fn a_route_entry_without_destination_is_a_finding_and_the_rest_is_analysed() {
    // The CLI on the same file: exit 1 (findings), not 2 (cannot load), the refused
    // object named with the entry's line, and the other objects' findings still there.
    let r = Run::new()
        .arg("analyze")
        .fixtures(&data("virtualservice_destinationhosts.yaml"))
        .run_plain();
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("virtualservice_destinationhosts.yaml:97: VirtualService default/reviews-bogushost: Istio's validation refuses the object: spec.http[0].route[0]: destination is required"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("error[MC104]") && r.stdout.contains("reviews-bogusport"),
        "{}",
        r.stdout
    );
}

#[test]
fn subsets_of_routes_and_mirrors_must_be_defined() {
    // virtualServiceDestinationRules: IST0101 for reviews-bogussubset and
    // reviews-mirror-bogussubset; the subsets the DestinationRules define are fine.
    assert_exactly(
        &["virtualservice_destinationrules.yaml"],
        &["MC105"],
        &[
            ("MC105", "VirtualService default/reviews-bogussubset"),
            ("MC105", "VirtualService default/reviews-mirror-bogussubset"),
        ],
    );
}

// --- destinationrule.PodNotSelectedAnalyzer (destinationrule/subset.go) -----------------

#[test]
fn destination_rule_hosts_and_subsets_that_select_nothing() {
    // DestinationRuleWithFakeHost: IST0174; DestinationRuleSubsetsNotSelectPods: IST0173
    // for the subset asking for version v3; DestinationRuleSubsetsWithTopologyLabels:
    // nothing (node topology labels count as pod labels); DestinationRuleEmptyTopology
    // Labels: IST0173 (an empty topology value never matches), its app-v1 subset fine.
    const DR: &[&str] = &["MC123", "MC124"];
    assert_exactly(
        &["destinationrule-with-fake-host.yaml"],
        DR,
        &[("MC123", "DestinationRule default/fake-host")],
    );
    let all = assert_exactly(
        &["destinationrule-subsets-not-select-pods.yaml"],
        DR,
        &[("MC124", "DestinationRule default/subsets-not-select-pods")],
    );
    let f = all.iter().find(|f| f.code == "MC124").unwrap();
    assert_eq!(
        f.message,
        "subset fake (labels {\"version\": \"v3\"}) selects no pod"
    );
    assert_eq!(
        f.istioctl,
        Some("IST0173 DestinationRuleSubsetNotSelectPods")
    );
    assert_exactly(
        &["destinationrule-subsets-with-topology-labels.yaml"],
        DR,
        &[],
    );
    let all = assert_exactly(
        &["destinationrule-empty-topology-labels.yaml"],
        DR,
        &[("MC124", "DestinationRule default/empty-topology-labels")],
    );
    assert!(
        all.iter()
            .filter(|f| f.code == "MC124")
            .all(|f| f.message.starts_with("subset empty-region ")),
        "{all:#?}"
    );
}

// --- destinationrule.CaCertificateAnalyzer (destinationrule/ca-certificates.go) ---------

#[test]
fn originated_tls_without_a_ca_is_unverified() {
    // The ca-certificates cases of analyzers_test.go: SIMPLE or MUTUAL without
    // caCertificates at the destination (MC125, IST0128) or a port (MC126, IST0129);
    // a credentialName counts only with a workloadSelector; both CAs set: nothing.
    const CODES: &[&str] = &["MC125", "MC126"];
    let dest = ("MC125", "DestinationRule default/db-tls");
    let port = ("MC126", "DestinationRule default/db-tls");
    for (file, want) in [
        ("destinationrule-simple-destination.yaml", vec![dest]),
        (
            "destinationrule-mutual-destination.yaml",
            vec![("MC125", "DestinationRule default/db-mtls")],
        ),
        ("destinationrule-simple-port.yaml", vec![port]),
        (
            "destinationrule-simple-destination-credentialname.yaml",
            vec![dest],
        ),
        (
            "destinationrule-simple-destination-credentialname-selector.yaml",
            vec![],
        ),
        (
            "destinationrule-simple-port-credentialname.yaml",
            vec![port],
        ),
        (
            "destinationrule-simple-port-credentialname-selector.yaml",
            vec![],
        ),
        (
            "destinationrule-mutual-port.yaml",
            vec![("MC126", "DestinationRule default/db-mtls")],
        ),
        (
            "destinationrule-compound-simple-mutual.yaml",
            vec![
                ("MC125", "DestinationRule default/db-mtls"),
                ("MC126", "DestinationRule default/db-mtls"),
            ],
        ),
        (
            "destinationrule-compound-mutual-simple.yaml",
            vec![
                ("MC125", "DestinationRule default/db-mtls"),
                ("MC126", "DestinationRule default/db-mtls"),
            ],
        ),
        ("destinationrule-with-ca.yaml", vec![]),
    ] {
        assert_exactly(&[file], CODES, &want);
    }
    let all = findings(&["destinationrule-compound-simple-mutual.yaml"]);
    let port = all.iter().find(|f| f.code == "MC126").unwrap();
    assert_eq!(
        port.message,
        "trafficPolicy.portLevelSettings[0] (port 443) tls.mode SIMPLE toward mydbserver.prod.svc.cluster.local without caCertificates"
    );
    assert_eq!(port.severity, meshcheck::analysis::Severity::Warning);
}

// --- virtualservice.GatewayAnalyzer (virtualservice/gateways.go) ------------------------

#[test]
fn gateway_references_and_hosts() {
    // virtualServiceGateways: IST0101 for httpbin-bogus; IST0132 (host not in the
    // Gateway) for cross-test and httpbin (meshcheck's MC102), and for httpbin-bogus,
    // whose Gateway does not exist (meshcheck says MC101 alone).
    let all = assert_exactly(
        &["virtualservice_gateways.yaml", "defaults.yaml"],
        &["MC101", "MC102"],
        &[
            ("MC101", "VirtualService default/httpbin-bogus"),
            ("MC102", "VirtualService default/cross-test"),
            ("MC102", "VirtualService default/httpbin"),
        ],
    );
    assert!(all
        .iter()
        .filter(|f| f.code == "MC102")
        .all(|f| f.istioctl == Some("IST0132 VirtualServiceHostNotFoundInGateway")));
}

#[test]
fn virtualservice_hosts_not_in_the_gateway_are_mc102() {
    // "host defined in virtualservice not found in the gateway" (v1 and v1beta1), and
    // "... with ns" (the Gateway's `ns/host` server hosts): IST0132 for exactly these.
    let plain = [
        ("MC102", "VirtualService default/testing-service-02-test-01"),
        ("MC102", "VirtualService default/testing-service-02-test-02"),
        ("MC102", "VirtualService default/testing-service-02-test-03"),
        ("MC102", "VirtualService default/testing-service-03-test-04"),
    ];
    let with_ns = [("MC102", "VirtualService default/testing-service-01-test-01")];
    for file in [
        "virtualservice_host_not_found_gateway.yaml",
        "virtualservice_host_not_found_gateway_beta.yaml",
    ] {
        assert_exactly(&[file, "defaults.yaml"], &["MC102"], &plain);
    }
    for file in [
        "virtualservice_host_not_found_gateway_with_ns_prefix.yaml",
        "virtualservice_host_not_found_gateway_with_ns_prefix_beta.yaml",
    ] {
        assert_exactly(&[file, "defaults.yaml"], &["MC102"], &with_ns);
    }
}

#[test]
fn gateway_api_gateways_are_referenced_by_their_listeners_generated_name() {
    // virtualServiceInternalGatewayRef (IST0165), with the Gateway API Gateway it
    // names: the listener's generated Gateway binds (MC122, a warning, no MC101); the
    // Gateway API Gateway's own name and a listener it does not have bind to nothing.
    let all = assert_exactly(
        &["meshcheck-gateway-api-ref.yaml"],
        &["MC101", "MC122"],
        &[
            ("MC122", "VirtualService default/httpbin-listener"),
            ("MC101", "VirtualService default/httpbin-gateway-name"),
            ("MC101", "VirtualService default/httpbin-other-listener"),
        ],
    );
    let by_name = all
        .iter()
        .find(|f| f.code == "MC101" && f.object == "VirtualService default/httpbin-gateway-name")
        .unwrap();
    assert!(
        by_name
            .message
            .contains("names Gateway istio-ingress/gateway of the Gateway API (gateway.networking.k8s.io), not an Istio Gateway"),
        "{by_name}"
    );
    // Without the Gateway API Gateway, istioctl's own scenario binds to nothing.
    assert_exactly(
        &["virtualservice_internal_gateway_ref.yaml"],
        &["MC101", "MC122"],
        &[("MC101", "VirtualService default/httpbin")],
    );
}

// --- workloads of every kind ---------------------------------------------------------------

#[test]
fn every_workload_kind_runs_pods() {
    // Services select a StatefulSet's, a DaemonSet's, a ReplicaSet's, a bare Pod's and
    // a Job's pods (no MC115; mongodb selects nothing: MC115); the gateway is a bare Pod
    // (no MC108/MC109); the ReplicaSet opting out of injection is MC112, the Job opting
    // out is not (Istio's advice for Jobs). Subset v1 of ratings selects the
    // StatefulSet's pods (no MC106); the tcp route's destinations are checked as
    // istioctl checks them: a subset no DestinationRule defines (MC105), a host that is
    // no Service (MC103).
    let all = assert_exactly(
        &["meshcheck-workload-kinds.yaml"],
        &[
            "MC103", "MC105", "MC106", "MC108", "MC109", "MC112", "MC114", "MC115",
        ],
        &[
            ("MC115", "Service bookinfo/mongodb"),
            ("MC112", "ReplicaSet bookinfo/reviews-v1"),
            ("MC105", "VirtualService bookinfo/ratings"),
            ("MC103", "VirtualService bookinfo/ratings"),
        ],
    );
    let tcp = all.iter().find(|f| f.code == "MC103").unwrap();
    assert!(
        tcp.message
            .starts_with("tcp[0].route[1] host `mongodb-bogus`"),
        "{tcp}"
    );
    let tcp = all.iter().find(|f| f.code == "MC105").unwrap();
    assert!(
        tcp.message
            .starts_with("tcp[0].route[0] names subset v1 of mongodb.bookinfo.svc.cluster.local"),
        "{tcp}"
    );
}

#[test]
fn a_subset_no_workload_of_any_kind_has_is_mc106() {
    // The same scenario with subset v1 of ratings asking for a version no pod has.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(data("meshcheck-workload-kinds.yaml"))
        .unwrap()
        .replace(
            "  - name: v1\n    labels:\n      version: v1\n",
            "  - name: v1\n    labels:\n      version: v3\n",
        );
    assert!(text.contains("version: v3"));
    std::fs::write(dir.path().join("kinds.yaml"), text).unwrap();
    let fx = load_dirs(&[dir.path().to_path_buf()]).unwrap();
    let all = analyze(&fx, &Mesh::build(&fx), &suite());
    let got = found(&all, &["MC106"]);
    assert_eq!(
        got,
        BTreeSet::from([(
            "MC106".to_string(),
            "DestinationRule bookinfo/ratings".to_string()
        )]),
        "{all:#?}"
    );
}

#[test]
fn injection_opt_outs_of_bare_pods_are_mc112() {
    // injection.yaml: the bare Pods of the injected namespace `default` that opt out
    // (annotation, label, label over annotation). istioctl reports none of them (its
    // IST0103 is a running pod created before injection was enabled; a manifest gets
    // its proxy when created); meshcheck's harness needs every app pod injected.
    // istio-system (istiod's pod) is not an app namespace (no MC111), as in istioctl.
    let all = assert_exactly(
        &["injection.yaml"],
        &["MC112"],
        &[
            ("MC112", "Pod default/podinjectiondisabled"),
            ("MC112", "Pod default/podinjectiondisabled-label"),
            ("MC112", "Pod default/podinjectiondisabled-label-and-anno"),
        ],
    );
    assert!(
        !all.iter()
            .any(|f| f.code == "MC111" && f.object.contains("istio-system")),
        "{all:?}"
    );
}

// --- gateway credentials' content (Istio's secure ingress task, certificates by rcgen) ----

/// A certificate for httpbin.example.com valid from `from` to `to` (years), PEM, and its
/// key.
fn certificate(from: i32, to: i32) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["httpbin.example.com".into()]).unwrap();
    p.not_before = rcgen::date_time_ymd(from, 1, 1);
    p.not_after = rcgen::date_time_ymd(to, 1, 1);
    (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn tls_secret(name: &str, pairs: &[(&str, &str)]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let data: String = pairs
        .iter()
        .map(|(k, v)| format!("  {k}: {}\n", b64.encode(v)))
        .collect();
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: istio-system\ntype: kubernetes.io/tls\ndata:\n{data}---\n")
}

/// The task's Gateway (`mygateway`, HTTPS 443 for httpbin.example.com) with `mode`, and
/// `secrets`, analysed with istioctl's default ingress gateway.
fn secure_ingress(mode: &str, secrets: &str) -> Vec<Finding> {
    let dir = tempfile::tempdir().unwrap();
    let gateway = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: mygateway\n  namespace: istio-system\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port:\n      number: 443\n      name: https\n      protocol: HTTPS\n    tls:\n      mode: {mode}\n      credentialName: httpbin-credential\n    hosts:\n    - httpbin.example.com\n---\n{secrets}"
    );
    std::fs::write(dir.path().join("secure-ingress.yaml"), gateway).unwrap();
    let fx = load_dirs(&[dir.path().to_path_buf(), data("defaults.yaml")]).unwrap();
    analyze(&fx, &Mesh::build(&fx), &suite())
}

fn credential_findings(all: &[Finding]) -> Vec<String> {
    all.iter()
        .filter(|f| f.analysis == "gateway-credentials")
        .map(|f| format!("{} {}: {}", f.code, f.object, f.message))
        .collect()
}

#[test]
fn a_valid_certificate_and_its_key_are_no_finding() {
    let (cert, key) = certificate(2025, 2035);
    let all = secure_ingress(
        "SIMPLE",
        &tls_secret(
            "httpbin-credential",
            &[("tls.crt", &cert), ("tls.key", &key)],
        ),
    );
    assert_eq!(credential_findings(&all), Vec::<String>::new());
}

#[test]
fn an_expired_certificate_is_mc131_as_istioctls_ist0161() {
    let (cert, key) = certificate(2020, 2021);
    let all = secure_ingress(
        "SIMPLE",
        &tls_secret(
            "httpbin-credential",
            &[("tls.crt", &cert), ("tls.key", &key)],
        ),
    );
    let got = credential_findings(&all);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("MC131 Gateway istio-system/mygateway: server 0 credentialName httpbin-credential: Secret istio-system/httpbin-credential: the certificate in tls.crt expired on"),
        "{got:?}"
    );
    let f = all.iter().find(|f| f.code == "MC131").unwrap();
    assert_eq!(f.istioctl, Some("IST0161 InvalidGatewayCredential"));
    // Not yet valid is the same condition (ValidateCertificate's NotBefore).
    let (cert, key) = certificate(2090, 2091);
    let got = credential_findings(&secure_ingress(
        "SIMPLE",
        &tls_secret(
            "httpbin-credential",
            &[("tls.crt", &cert), ("tls.key", &key)],
        ),
    ));
    assert!(
        got.len() == 1 && got[0].contains("is not valid before"),
        "{got:?}"
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_mc132() {
    let (cert, _) = certificate(2025, 2035);
    let (_, other_key) = certificate(2025, 2035);
    let got = credential_findings(&secure_ingress(
        "SIMPLE",
        &tls_secret(
            "httpbin-credential",
            &[("tls.crt", &cert), ("tls.key", &other_key)],
        ),
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("MC132 ")
            && got[0]
                .contains("the private key in tls.key does not match the certificate's public key"),
        "{got:?}"
    );
}

#[test]
fn mutual_tls_needs_a_valid_ca_certificate() {
    let (cert, key) = certificate(2025, 2035);
    let (ca, _) = certificate(2025, 2035);
    let server = tls_secret(
        "httpbin-credential",
        &[("tls.crt", &cert), ("tls.key", &key)],
    );
    // The task's MUTUAL step without its CA: MC132.
    let got = credential_findings(&secure_ingress("MUTUAL", &server));
    assert!(
        got.len() == 1 && got[0].contains("tls.mode MUTUAL needs a CA certificate"),
        "{got:?}"
    );
    // With the CA in `<name>-cacert` (the task's way), or in the Secret itself: none.
    let with_cacert = format!(
        "{server}{}",
        tls_secret("httpbin-credential-cacert", &[("ca.crt", &ca)])
    );
    assert_eq!(
        credential_findings(&secure_ingress("MUTUAL", &with_cacert)),
        Vec::<String>::new()
    );
    let (cert2, key2) = certificate(2025, 2035);
    let combined = tls_secret(
        "httpbin-credential",
        &[("tls.crt", &cert2), ("tls.key", &key2), ("ca.crt", &ca)],
    );
    assert_eq!(
        credential_findings(&secure_ingress("MUTUAL", &combined)),
        Vec::<String>::new()
    );
    // An expired CA is refused too.
    let (old_ca, _) = certificate(2020, 2021);
    let expired = format!(
        "{server}{}",
        tls_secret("httpbin-credential-cacert", &[("ca.crt", &old_ca)])
    );
    let got = credential_findings(&secure_ingress("MUTUAL", &expired));
    assert!(
        got.len() == 1 && got[0].contains("the certificate in ca.crt expired on"),
        "{got:?}"
    );
}

//! Gateways end to end on the local target: TLS `SIMPLE` with `credentialName` (Istio's
//! "Secure Gateways" task: httpbin behind httpbin.example.com on 443), several
//! Gateways and servers on one port (pilot's mergeGateways), https requests with SNI,
//! and what happens when the Secret is missing. Every fixture set is compared with
//! istiod when the test ends (FixtureCopy's drop hook); with
//! MESHCHECK_CONTROL_PLANE=istiod the gateway serves istiod's own config.

mod common;
use common::*;

/// The gateway Service and pod also expose 443 (targetPort 8443), as Istio's
/// ingress gateway does.
fn with_https_port(f: &FixtureCopy) {
    f.replace(
        "10-ingress-gateway.yaml",
        "        - name: http\n          containerPort: 8080\n",
        "        - name: http\n          containerPort: 8080\n        - name: https\n          containerPort: 8443\n",
    );
    f.replace(
        "10-ingress-gateway.yaml",
        "    targetPort: 8080\n    nodePort: 30080\n",
        "    targetPort: 8080\n    nodePort: 30080\n  - name: https\n    port: 443\n    targetPort: 8443\n    nodePort: 30443\n",
    );
}

/// A `kubernetes.io/tls` Secret in the gateway pods' namespace holding a real
/// certificate and its key (the local target serves a per-run certificate in its
/// place; the analysis checks the Secret's content as istiod and Envoy do).
fn secret(name: &str) -> String {
    use base64::Engine;
    let cert = rcgen::generate_simple_self_signed(vec![format!("{name}.example.com")]).unwrap();
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: istio-ingress\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n---\n",
        b64(cert.cert.pem()),
        b64(cert.signing_key.serialize_pem())
    )
}

/// A Gateway with one HTTPS server (`SIMPLE`, `credentialName`) for `host`.
fn https_gateway(name: &str, port_name: &str, credential: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: istio-ingress\nspec:\n  selector:\n    istio: my-ingress-gateway\n  servers:\n  - port:\n      number: 443\n      name: {port_name}\n      protocol: HTTPS\n    tls:\n      mode: SIMPLE\n      credentialName: {credential}\n    hosts:\n    - {host}\n---\n"
    )
}

/// A Gateway with one HTTP server on 80 for `host`.
fn http_gateway(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: istio-ingress\nspec:\n  selector:\n    istio: my-ingress-gateway\n  servers:\n  - port:\n      number: 80\n      name: http-{name}\n      protocol: HTTP\n    hosts:\n    - {host}\n---\n"
    )
}

/// A VirtualService in `atlas` for `hosts`, bound to `gateways`, routing to `service`.
fn virtual_service(name: &str, hosts: &[&str], gateways: &[&str], service: &str) -> String {
    let list = |xs: &[&str]| xs.iter().map(|x| format!("  - {x}\n")).collect::<String>();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: atlas\nspec:\n  hosts:\n{}  gateways:\n{}  http:\n  - route:\n    - destination:\n        host: {service}\n---\n",
        list(hosts),
        list(gateways)
    )
}

/// Istio's Secure Gateways task on the shipped fixtures: httpbin.example.com on 443
/// (served by authz) and helloworld.example.com on 443 (served by atlas-ui), each with
/// its own Secret, Gateway and VirtualService.
fn secure_gateways() -> FixtureCopy {
    let f = FixtureCopy::new();
    with_https_port(&f);
    let mut text = secret("httpbin-credential");
    text += &secret("helloworld-credential");
    text += &https_gateway(
        "httpbin-gateway",
        "https",
        "httpbin-credential",
        "httpbin.example.com",
    );
    text += &https_gateway(
        "helloworld-gateway",
        "https-hello",
        "helloworld-credential",
        "helloworld.example.com",
    );
    text += &virtual_service(
        "httpbin",
        &["httpbin.example.com"],
        &["istio-ingress/httpbin-gateway"],
        "authz",
    );
    text += &virtual_service(
        "helloworld",
        &["helloworld.example.com"],
        &["istio-ingress/helloworld-gateway"],
        "atlas-ui",
    );
    f.write("60-secure-gateways.yaml", &text);
    f
}

/// A suite allowing 443 on the gateway Service, with `checks` (YAML list items).
fn suite(checks: &str) -> String {
    format!("name: gateways\nfixtures: .\npolicy:\n  allowed_ports: [80, 443]\nchecks:\n{checks}")
}

const HTTPS_CHECKS: &str = r#"  - group: tls
    name: httpbin
    http:
      request: { path: /status/200, host: httpbin.example.com, scheme: https, port: 443 }
      expect: { status: 200, backend: { service: authz }, path: /status/200 }
  - group: tls
    name: helloworld
    http:
      request: { path: /hello, host: helloworld.example.com, scheme: https, port: 443 }
      expect: { status: 200, backend: { service: atlas-ui } }
  - group: tls
    name: plain-http-still-on-80
    http:
      request: { path: /atlas-ui }
      expect: { status: 200, backend: { service: atlas-ui } }
"#;

#[test]
fn https_servers_answer_by_sni_with_their_own_certificate_and_routes() {
    let f = secure_gateways();
    let r = run_suite(&f, &suite(HTTPS_CHECKS));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for c in [
        "tls::httpbin",
        "tls::helloworld",
        "tls::plain-http-still-on-80",
    ] {
        assert!(r.passed.contains(c), "{c}\n{}", r.stdout);
        assert!(
            r.passed.contains(&format!("static::simulate::{c}")),
            "{c}\n{}",
            r.stdout
        );
    }
    assert!(
        r.passed.contains("static::gateway-credentials"),
        "{}",
        r.stdout
    );
    // Nothing about the TLS servers is reported as not modelled.
    assert!(
        !r.stderr.contains("not modelled") && !r.stdout.contains("not modelled"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn probe_sends_each_route_to_its_own_port_and_scheme() {
    // https routes on 443 (SNI, the run's CA) and a plain one on 80, in one probe.
    let f = secure_gateways();
    let suite_path = f.suite_file(&suite(HTTPS_CHECKS));
    let d = tempfile::tempdir().unwrap();
    let r = Run::new()
        .arg("probe")
        .arg("--target")
        .arg("local")
        .arg("--duration")
        .arg("2s")
        .arg("--rate")
        .arg("30")
        .arg("--suite")
        .arg(suite_path.path())
        .arg("--fixtures")
        .arg(f.path())
        .arg("--junit")
        .arg(d.path().join("probe.xml"))
        .run_plain();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for route in [
        "tls::httpbin",
        "tls::helloworld",
        "tls::plain-http-still-on-80",
    ] {
        let line = r
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(route))
            .unwrap_or_else(|| panic!("{route}\n{}", r.stdout));
        let w: Vec<&str> = line.split_whitespace().collect();
        assert!(w[1].parse::<usize>().unwrap() > 0, "{line}");
        assert_eq!(w[2], "0", "no error: {line}");
    }
}

#[test]
fn an_sni_no_server_names_fails_the_handshake_and_the_simulation_says_so() {
    let f = secure_gateways();
    let checks = r#"  - group: tls
    name: unknown-sni
    http:
      request: { path: /, host: other.example.com, scheme: https, port: 443 }
      expect: { status: 404 }
  - group: tls
    name: plaintext-to-443
    http:
      request: { path: /, host: httpbin.example.com, port: 443 }
      expect: { status: 200 }
"#;
    let r = run_suite(&f, &suite(checks));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    for c in ["tls::unknown-sni", "tls::plaintext-to-443"] {
        assert!(r.failed.contains(c), "{c}\n{}", r.stdout);
        assert!(
            r.failed.contains(&format!("static::simulate::{c}")),
            "{c}\n{}",
            r.stdout
        );
    }
    assert!(
        r.stdout
            .contains("no filter chain of listener 0.0.0.0_8443 matches SNI other.example.com: TLS handshake fails"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("terminates TLS, the client speaks plaintext HTTP"),
        "{}",
        r.stdout
    );
    // What came back is no HTTP answer at all.
    assert!(
        r.stdout.contains("observed: cannot connect") || r.stdout.contains("observed: connection"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_missing_secret_is_a_finding_and_only_its_server_fails() {
    let f = secure_gateways();
    // helloworld's Secret is not among the fixtures.
    f.replace(
        "60-secure-gateways.yaml",
        "  name: helloworld-credential\n  namespace: istio-ingress\n",
        "  name: other-credential\n  namespace: istio-ingress\n",
    );
    let r = run_suite(&f, &suite(HTTPS_CHECKS));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let want: std::collections::BTreeSet<String> = [
        "static::gateway-credentials",
        "static::simulate::tls::helloworld",
        "tls::helloworld",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(r.failed, want, "{}", r.stdout);
    assert!(
        r.stdout.contains("error[MC130]")
            && r.stdout.contains("credentialName helloworld-credential: no Secret istio-ingress/helloworld-credential among the fixtures")
            && r.stdout.contains("IST0101 ReferencedResourceNotFound"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("predicted TLS handshake fails"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_secret_without_a_certificate_is_an_invalid_credential() {
    let f = secure_gateways();
    f.replace(
        "60-secure-gateways.yaml",
        "  name: helloworld-credential\n  namespace: istio-ingress\ntype: kubernetes.io/tls\ndata:\n  tls.crt:",
        "  name: helloworld-credential\n  namespace: istio-ingress\ndata:\n  password:",
    );
    let r = run_suite(&f, &suite(HTTPS_CHECKS));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("static::gateway-credentials") && r.failed.contains("tls::helloworld"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("error[MC131]") && r.stdout.contains("IST0161 InvalidGatewayCredential"),
        "{}",
        r.stdout
    );
    assert!(r.passed.contains("tls::httpbin"), "{}", r.stdout);
}

#[test]
fn a_secret_in_another_namespace_than_the_gateway_pods_is_not_served() {
    let f = secure_gateways();
    // The Secret next to the Gateway's VirtualService, not next to the gateway pods:
    // istiod's SDS serves only Secrets of the proxy's namespace (pilot/pkg/xds/sds.go).
    f.replace(
        "60-secure-gateways.yaml",
        "  name: httpbin-credential\n  namespace: istio-ingress\n",
        "  name: httpbin-credential\n  namespace: atlas\n",
    );
    let r = run_suite(&f, &suite(HTTPS_CHECKS));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("tls::httpbin") && r.failed.contains("static::gateway-credentials"),
        "{}",
        r.stdout
    );
    assert!(r.passed.contains("tls::helloworld"), "{}", r.stdout);
}

/// Two Gateways on port 80 for different hosts (merged into `http.8080`), a
/// VirtualService bound to each.
fn two_http_gateways(bind_a_to_b_too: bool) -> FixtureCopy {
    let f = FixtureCopy::new();
    let mut text = http_gateway("gw-a", "a.example.com");
    text += &http_gateway("gw-b", "b.example.com");
    let a_gateways: &[&str] = if bind_a_to_b_too {
        &["istio-ingress/gw-a", "istio-ingress/gw-b"]
    } else {
        &["istio-ingress/gw-a"]
    };
    text += &virtual_service(
        "vs-a",
        &["a.example.com", "b.example.com"],
        a_gateways,
        "authz",
    );
    text += &virtual_service(
        "vs-b",
        &["b.example.com"],
        &["istio-ingress/gw-b"],
        "atlas-ui",
    );
    f.write("60-two-gateways.yaml", &text);
    f
}

const TWO_GATEWAY_CHECKS: &str = r#"  - group: hosts
    name: a-on-gateway-a
    http:
      request: { path: /x, host: a.example.com }
      expect: { status: 200, backend: { service: authz } }
  - group: hosts
    name: b-on-gateway-b
    http:
      request: { path: /x, host: b.example.com }
      expect: { status: 200, backend: { service: atlas-ui } }
"#;

#[test]
fn a_virtual_service_bound_to_gateway_a_does_not_answer_on_gateway_b_host() {
    let f = two_http_gateways(false);
    let r = run_suite(&f, &suite(TWO_GATEWAY_CHECKS));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.passed.contains("hosts::a-on-gateway-a") && r.passed.contains("hosts::b-on-gateway-b"),
        "{}",
        r.stdout
    );
}

#[test]
fn bound_to_both_gateways_the_first_virtual_service_takes_b_host_too() {
    // vs-a (name order first) bound to gw-b as well: its catch-all route now comes
    // first in b.example.com's virtual host, and authz answers there.
    let f = two_http_gateways(true);
    let r = run_suite(&f, &suite(TWO_GATEWAY_CHECKS));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("hosts::b-on-gateway-b")
            && r.failed.contains("static::simulate::hosts::b-on-gateway-b"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("expected service atlas-ui, got 200 from authz"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_tls_host_already_served_on_the_port_skips_the_later_server() {
    let f = secure_gateways();
    // A third Gateway (name order after httpbin-gateway) repeats httpbin.example.com
    // on 443: pilot's mergeGateways (CheckDuplicates) skips its server.
    let mut text = f.read("60-secure-gateways.yaml");
    text += &secret("zz-credential");
    text += &https_gateway(
        "zz-gateway",
        "https-zz",
        "zz-credential",
        "httpbin.example.com",
    );
    text += &virtual_service(
        "zz",
        &["httpbin.example.com"],
        &["istio-ingress/zz-gateway"],
        "atlas-ui",
    );
    f.write("60-secure-gateways.yaml", &text);
    let r = run_suite(&f, &suite(HTTPS_CHECKS));
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.passed.contains("tls::httpbin"), "{}", r.stdout);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("host(s) httpbin.example.com already served with TLS on port 443 by Gateway istio-ingress/httpbin-gateway"),
        "{all}"
    );
}

#[test]
fn unmodelled_tls_modes_and_fields_are_reported() {
    let f = secure_gateways();
    // MUTUAL is not modelled: istiod builds its chain, the model binds the port only.
    f.disagrees_with_istiod();
    f.replace(
        "60-secure-gateways.yaml",
        "      mode: SIMPLE\n      credentialName: helloworld-credential\n",
        "      mode: MUTUAL\n      credentialName: helloworld-credential\n      minProtocolVersion: TLSV1_2\n",
    );
    let r = Run::new().arg("analyze").fixtures(f.path()).run_plain();
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("TLS mode MUTUAL is not modelled (only SIMPLE is; not modelled: PASSTHROUGH, MUTUAL, ISTIO_MUTUAL, AUTO_PASSTHROUGH, OPTIONAL_MUTUAL)"),
        "{all}"
    );
    assert!(all.contains("minProtocolVersion"), "{all}");
}

#[test]
fn a_service_port_without_a_gateway_server_is_predicted_refused() {
    // 443 on the gateway Service, but no Gateway server on it: no listener.
    let f = FixtureCopy::new();
    with_https_port(&f);
    let checks = r#"  - group: tls
    name: no-server-on-443
    http:
      request: { path: /, host: httpbin.example.com, scheme: https, port: 443 }
      expect: { status: 200 }
"#;
    let r = run_suite(&f, &suite(checks));
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.failed.contains("tls::no-server-on-443")
            && r.failed.contains("static::simulate::tls::no-server-on-443"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("no Gateway server selecting the gateway pods uses Service port 443")
            && r.stdout.contains("predicted connection refused"),
        "{}",
        r.stdout
    );
}

/// A DENY at the gateway on `connection.sni` (when key; builder's
/// `connection.sni` → `requested_server_name`), for the paths `/sni-denied`.
const DENY_BY_SNI: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-by-sni\n  namespace: istio-ingress\nspec:\n  selector:\n    matchLabels:\n      istio: my-ingress-gateway\n  action: DENY\n  rules:\n  - when:\n    - key: connection.sni\n      values: [\"httpbin.example.com\"]\n    to:\n    - operation:\n        paths: [\"/sni-denied\"]\n";

const SNI_CHECKS: &str = r#"  - group: sni
    name: denied-on-its-server
    http:
      request: { path: /sni-denied, host: httpbin.example.com, scheme: https, port: 443 }
      expect: { denied: rbac }
  - group: sni
    name: other-server-allowed
    http:
      request: { path: /sni-denied, host: helloworld.example.com, scheme: https, port: 443 }
      expect: { status: 200, backend: { service: atlas-ui } }
  - group: sni
    name: other-path-allowed
    http:
      request: { path: /status/200, host: httpbin.example.com, scheme: https, port: 443 }
      expect: { status: 200, backend: { service: authz } }
  - group: sni
    name: plaintext-has-no-sni
    http:
      request: { path: /sni-denied, host: httpbin.example.com }
      expect: { status: 404 }
"#;

#[test]
fn a_policy_on_the_connection_s_sni_denies_only_on_that_server() {
    let f = secure_gateways();
    f.write("70-deny-by-sni.yaml", DENY_BY_SNI);
    let text = suite(SNI_CHECKS);
    let r = run_suite(&f, &text);
    assert_suite_fails_exactly(&r, &text, &[], &[], &[]);
}

#[test]
fn a_policy_on_another_sni_denies_the_other_server_instead() {
    let f = secure_gateways();
    f.write(
        "70-deny-by-sni.yaml",
        &DENY_BY_SNI.replace("[\"httpbin.example.com\"]", "[\"helloworld.example.com\"]"),
    );
    let text = suite(SNI_CHECKS);
    let r = run_suite(&f, &text);
    assert_suite_fails_exactly(
        &r,
        &text,
        &["sni::denied-on-its-server", "sni::other-server-allowed"],
        &[],
        &[],
    );
}

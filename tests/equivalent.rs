//! Fixtures that mean the same thing as the shipped ones still pass every check: other
//! file layouts, other object names, FQDN hosts, another NodePort, named target ports.

mod common;
use common::*;

#[test]
fn one_file_with_everything_passes() {
    let f = FixtureCopy::new();
    let mut all = String::new();
    let mut names: Vec<_> = std::fs::read_dir(f.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names.reverse(); // order of objects does not matter
    for p in &names {
        all.push_str("---\n");
        all.push_str(&std::fs::read_to_string(p).unwrap());
        std::fs::remove_file(p).unwrap();
    }
    std::fs::create_dir(f.path().join("nested")).unwrap();
    std::fs::write(f.path().join("nested/all.yml"), all).unwrap();
    let r = Run::new().fixtures(f.path()).run();
    assert_fails_exactly::<&str>(&r, &[]);
}

#[test]
fn renamed_objects_fqdn_hosts_and_another_nodeport_pass() {
    let f = FixtureCopy::new();
    // Gateway, VirtualService and DestinationRule names; references follow.
    f.replace(
        "30-gateway.yaml",
        "  name: atlas-gateway\n",
        "  name: public-gw\n",
    );
    let vs = f
        .read("40-virtualservices.yaml")
        .replace("  - atlas-gateway\n", "  - atlas/public-gw\n")
        .replace(
            "  name: atlas-ui\n  namespace",
            "  name: vs-ui\n  namespace",
        )
        .replace(
            "  name: nb-rest\n  namespace",
            "  name: vs-rest\n  namespace",
        )
        .replace(
            "        host: atlas-ui\n",
            "        host: atlas-ui.atlas.svc.cluster.local\n",
        )
        .replace(
            "        host: nb-rest\n",
            "        host: nb-rest.atlas.svc.cluster.local\n",
        )
        // Fully qualified (a dotted `authz.atlas` would be taken as fully qualified by
        // Istio and name no Service: tests/analyze.rs).
        .replace(
            "        host: authz\n",
            "        host: authz.atlas.svc.cluster.local\n",
        );
    f.write("40-virtualservices.yaml", &vs);
    let dr = f
        .read("50-destinationrules.yaml")
        .replace("  name: nb-rest\n", "  name: dr-nb-rest\n")
        .replace(
            "  host: nb-rest\n",
            "  host: nb-rest.atlas.svc.cluster.local\n",
        );
    f.write("50-destinationrules.yaml", &dr);
    // The gateway workload, its service account (the expected identity follows the
    // fixtures) and the NodePort.
    let gw = f
        .read("10-ingress-gateway.yaml")
        .replace(
            "name: my-ingress-gateway\n  namespace: istio-ingress\n---\napiVersion: apps/v1",
            "name: edge-proxy\n  namespace: istio-ingress\n---\napiVersion: apps/v1",
        )
        .replace(
            "serviceAccountName: my-ingress-gateway",
            "serviceAccountName: edge-proxy",
        )
        .replace("nodePort: 30080", "nodePort: 31555");
    f.write("10-ingress-gateway.yaml", &gw);
    // Backend deployments renamed, Service targetPort by name.
    let be = f
        .read("20-backends.yaml")
        .replace("  name: nb-rest-v1\n", "  name: rest-stable\n")
        .replace("  name: nb-rest-v2\n", "  name: rest-canary\n")
        .replace("    targetPort: 8080\n", "    targetPort: http\n");
    f.write("20-backends.yaml", &be);
    let r = Run::new().fixtures(f.path()).run();
    assert_fails_exactly::<&str>(&r, &[]);
}

#[test]
fn gateway_in_the_gateway_namespace_and_one_virtualservice_pass() {
    let f = FixtureCopy::new();
    f.replace(
        "30-gateway.yaml",
        "  namespace: atlas\n",
        "  namespace: istio-ingress\n",
    );
    // One VirtualService holding all the routes, in Istio's order.
    let vs = f.read("40-virtualservices.yaml");
    let docs: Vec<&str> = vs.split("\n---\n").collect();
    let http_of = |doc: &str| format!("{}\n", doc.split_once("  http:\n").unwrap().1.trim_end());
    let merged = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: atlas\n  namespace: atlas\nspec:\n  hosts:\n  - \"*\"\n  gateways:\n  - istio-ingress/atlas-gateway\n  http:\n{}{}{}",
        http_of(docs[0]),
        http_of(docs[1]),
        http_of(docs[2])
    );
    f.write("40-virtualservices.yaml", &merged);
    let r = Run::new().fixtures(f.path()).run();
    assert_fails_exactly::<&str>(&r, &[]);
}

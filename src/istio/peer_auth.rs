//! PeerAuthentication as istiod applies it (Istio 1.30.3): the mTLS mode each
//! workload's sidecar accepts per port, and what auto mTLS makes of it on the
//! gateway's side.
//!
//! - pilot/pkg/model/authentication.go addPeerAuthentication: policies ordered by
//!   creation time, then name, then namespace (fixtures applied together share a
//!   creation second, so by name); one namespace-wide (or mesh-wide, in the root
//!   namespace) policy per namespace, the first, the others ignored; a mesh-wide
//!   UNSET is PERMISSIVE; a namespace-wide UNSET inherits the mesh's mode (PERMISSIVE
//!   without one) for GetNamespaceMutualTLSMode.
//! - authentication.go getConfigsForWorkload: the policies of the workload's
//!   namespace and of the root namespace whose selector is a subset of the
//!   workload's labels (no selector: every workload).
//! - pilot/pkg/security/authn/policy_applier.go ComposePeerAuthentication: PERMISSIVE,
//!   overridden in order by the mesh-wide, the namespace-wide and the workload
//!   policy (the first by the order above; a selector in the root namespace is
//!   ignored), each unless its mode is UNSET; `portLevelMtls` of the workload policy
//!   per workload port, UNSET taking the workload's mode. GetMutualTLSModeForPort:
//!   the port's mode, else the workload's.
//! - pilot/pkg/networking/core/filterchain_options.go getFilterChainMatchOptions: the
//!   inbound chains per port: STRICT mTLS only, PERMISSIVE mTLS and plaintext,
//!   DISABLE plaintext only; a connection no chain takes is closed.
//! - pilot/pkg/model/push_context.go BestEffortInferServiceMTLSMode: the service's
//!   mode for auto mTLS is its namespace's (GetNamespaceMutualTLSMode), PERMISSIVE
//!   without one; workload and port policies are not looked at.
//!   pilot/pkg/networking/core/cluster_tls.go buildUpstreamTLSSettings: without a
//!   DestinationRule `tls`, a service mode DISABLE gives no TLS at all (plaintext to
//!   every endpoint); otherwise mTLS by the endpoint's `tlsMode` metadata.
//! - pilot/pkg/xds/endpoints/mtls_checker.go checkMtlsEnabled: an endpoint keeps its
//!   `tlsMode: istio` metadata when the DestinationRule's mode for it is ISTIO_MUTUAL;
//!   without one, when it has a sidecar and its workload's mode at the endpoint port
//!   is not DISABLE.
//!
//! Not modelled: headless Services and `loadBalancer.simple: PASSTHROUGH` (pilot
//! infers DISABLE when an endpoint has no sidecar there), ambient.

use super::mesh::{ClusterPlan, EndpointPlan, Mesh, TlsOrigin, UpstreamTls};
use crate::fixtures::k8s::Labels;
use crate::fixtures::security::{PeerAuthentication, PeerMutualTls};
use crate::fixtures::{Fixtures, Item, Source};
use std::collections::BTreeMap;
use std::fmt;

/// An effective mTLS mode (model.MutualTLSMode without its Unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MtlsMode {
    Disable,
    Permissive,
    Strict,
}

impl MtlsMode {
    /// model.ConvertToMutualTLSMode; None for UNSET (and what validation refuses).
    pub fn of(written: &str) -> Option<MtlsMode> {
        match written {
            "DISABLE" => Some(MtlsMode::Disable),
            "PERMISSIVE" => Some(MtlsMode::Permissive),
            "STRICT" => Some(MtlsMode::Strict),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }

    /// Whether the sidecar's inbound chains take Istio mTLS.
    pub fn takes_mtls(self) -> bool {
        self != MtlsMode::Disable
    }

    /// Whether they take plaintext.
    pub fn takes_plaintext(self) -> bool {
        self != MtlsMode::Strict
    }
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy and field that set a mode.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeSource {
    /// `PeerAuthentication ns/name`.
    pub object: String,
    pub at: Source,
    /// `mtls.mode STRICT`, `portLevelMtls 8080 DISABLE`, `mtls.mode UNSET`.
    pub field: String,
}

impl fmt::Display for ModeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}) {}", self.object, self.at, self.field)
    }
}

/// A mode and where it comes from (None: no policy set it, Istio's default).
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub mode: MtlsMode,
    pub from: Option<ModeSource>,
}

impl Decided {
    fn default_permissive() -> Decided {
        Decided {
            mode: MtlsMode::Permissive,
            from: None,
        }
    }

    /// `STRICT (PeerAuthentication atlas/strict (f:3) mtls.mode STRICT)`.
    pub fn describe(&self) -> String {
        match &self.from {
            Some(s) => format!("{} ({s})", self.mode),
            None => format!(
                "{} (no PeerAuthentication sets it: Istio's default)",
                self.mode
            ),
        }
    }
}

/// One workload's effective policy (policy_applier.go MergedPeerAuthentication).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadMtls {
    pub workload: Decided,
    /// Workload port -> its mode (only the workload policy's `portLevelMtls`).
    pub per_port: BTreeMap<u16, Decided>,
}

impl WorkloadMtls {
    /// GetMutualTLSModeForPort.
    pub fn for_port(&self, port: u16) -> &Decided {
        self.per_port.get(&port).unwrap_or(&self.workload)
    }
}

impl Default for WorkloadMtls {
    fn default() -> Self {
        WorkloadMtls {
            workload: Decided::default_permissive(),
            per_port: BTreeMap::new(),
        }
    }
}

/// The fixtures' PeerAuthentications indexed as pilot's AuthenticationPolicies.
pub struct PeerAuthn<'a> {
    root: String,
    /// Per namespace, in pilot's order; a namespace's extra namespace-wide policies
    /// left out.
    by_namespace: BTreeMap<&'a str, Vec<&'a Item<PeerAuthentication>>>,
    /// globalMutualTLSMode (None: MTLSUnknown, no mesh-wide policy).
    global: Option<Decided>,
    /// namespaceMutualTLSMode.
    namespaces: BTreeMap<&'a str, Decided>,
    /// Policies istiod never applies to any workload, and why.
    pub ignored: Vec<(&'a Item<PeerAuthentication>, String)>,
}

fn source_of(p: &Item<PeerAuthentication>, field: String) -> ModeSource {
    ModeSource {
        object: p.describe(),
        at: p.source.clone(),
        field,
    }
}

fn mtls_field(m: Option<&PeerMutualTls>) -> String {
    format!("mtls.mode {}", m.map_or("UNSET", PeerMutualTls::mode))
}

impl<'a> PeerAuthn<'a> {
    /// initAuthenticationPolicies / addPeerAuthentication.
    pub fn new(fx: &'a Fixtures) -> PeerAuthn<'a> {
        let root = fx.root_namespace().to_string();
        let mut all: Vec<&Item<PeerAuthentication>> = fx.peer_authentications.iter().collect();
        // sortConfigByCreationTime: one creation time, then name, then namespace.
        all.sort_by(|a, b| (&a.name, &a.namespace).cmp(&(&b.name, &b.namespace)));
        let mut out = PeerAuthn {
            root,
            by_namespace: BTreeMap::new(),
            global: None,
            namespaces: BTreeMap::new(),
            ignored: Vec::new(),
        };
        let mut wide: BTreeMap<&str, &Item<PeerAuthentication>> = BTreeMap::new();
        for p in all {
            let spec = &p.spec.spec;
            if !spec.has_selector() {
                if let Some(first) = wide.get(p.namespace.as_str()) {
                    let scope = if p.namespace == out.root {
                        "mesh-wide"
                    } else {
                        "namespace-wide"
                    };
                    out.ignored.push((
                        p,
                        format!(
                            "{} already is the {scope} policy of {} ({}; the first by creation time, then name)",
                            first.describe(),
                            p.namespace,
                            first.source
                        ),
                    ));
                    continue;
                }
                wide.insert(&p.namespace, p);
                let mode = MtlsMode::of(spec.mode());
                let from = source_of(p, mtls_field(spec.mtls.as_ref()));
                if p.namespace == out.root {
                    out.global = Some(Decided {
                        mode: mode.unwrap_or(MtlsMode::Permissive),
                        from: Some(from),
                    });
                }
            } else if p.namespace == out.root {
                out.ignored.push((
                    p,
                    format!(
                        "it has a selector and is in the root namespace {}: pilot's ComposePeerAuthentication takes workload policies from other namespaces only",
                        out.root
                    ),
                ));
            }
            out.by_namespace.entry(&p.namespace).or_default().push(p);
        }
        // Namespace-wide modes, UNSET inheriting the mesh's (PERMISSIVE without one).
        for (ns, p) in wide {
            if ns == out.root {
                continue;
            }
            let decided = match MtlsMode::of(p.spec.spec.mode()) {
                Some(mode) => Decided {
                    mode,
                    from: Some(source_of(p, mtls_field(p.spec.spec.mtls.as_ref()))),
                },
                None => out
                    .global
                    .clone()
                    .unwrap_or_else(Decided::default_permissive),
            };
            out.namespaces.insert(ns, decided);
        }
        out
    }

    /// GetNamespaceMutualTLSMode: the namespace-wide mode, else the mesh's; None when
    /// neither policy exists (MTLSUnknown).
    pub fn namespace_mode(&self, namespace: &str) -> Option<&Decided> {
        self.namespaces.get(namespace).or(self.global.as_ref())
    }

    /// BestEffortInferServiceMTLSMode for a Service of `namespace` (not external, not
    /// passthrough): its namespace's mode, else PERMISSIVE.
    pub fn service_mode(&self, namespace: &str) -> Decided {
        self.namespace_mode(namespace)
            .cloned()
            .unwrap_or_else(Decided::default_permissive)
    }

    /// getConfigsForWorkload + ComposePeerAuthentication for a workload in
    /// `namespace` with `labels`.
    pub fn workload(&self, namespace: &str, labels: &Labels) -> WorkloadMtls {
        let mut mesh = None;
        let mut namespace_wide = None;
        let mut workload = None;
        let mut lookup = vec![namespace];
        if self.root != namespace {
            lookup.push(&self.root);
        }
        for ns in lookup {
            for p in self.by_namespace.get(ns).into_iter().flatten() {
                let spec = &p.spec.spec;
                let selected = spec
                    .selector
                    .as_ref()
                    .is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)));
                if !selected {
                    continue;
                }
                // The first of each scope wins (equal creation times: `Before` is false).
                if !spec.has_selector() {
                    if p.namespace == self.root {
                        mesh.get_or_insert(*p);
                    } else {
                        namespace_wide.get_or_insert(*p);
                    }
                } else if p.namespace != self.root {
                    workload.get_or_insert(*p);
                }
            }
        }
        let mut out = WorkloadMtls::default();
        for p in [mesh, namespace_wide, workload].into_iter().flatten() {
            if let Some(mode) = MtlsMode::of(p.spec.spec.mode()) {
                out.workload = Decided {
                    mode,
                    from: Some(source_of(p, mtls_field(p.spec.spec.mtls.as_ref()))),
                };
            }
        }
        if let Some(p) = workload {
            for (port, m) in p.spec.spec.port_level() {
                let decided = match MtlsMode::of(m.mode()) {
                    Some(mode) => Decided {
                        mode,
                        from: Some(source_of(p, format!("portLevelMtls {port} {mode}"))),
                    },
                    // Inherit from the workload level.
                    None => out.workload.clone(),
                };
                out.per_port.insert(port, decided);
            }
        }
        out
    }
}

/// What the gateway's hop to one endpoint of a cluster does.
#[derive(Debug, Clone, PartialEq)]
pub enum Hop {
    /// Istio mTLS, terminated by the pod's sidecar.
    Mtls,
    Plaintext,
    /// The connection fails: the gateway answers 503 itself.
    Fails(String),
}

/// The end of a failing hop's reason when the sidecar closes a plaintext connection
/// (no filter chain takes it): Envoy at the gateway sees the connection end before
/// any response.
pub const RESET_BY_STRICT: &str = "the sidecar closes the connection: 503 (UC)";

/// How `c` decides its TLS, in words: `DestinationRule atlas/authz (f:9) tls.mode
/// DISABLE`, `auto mTLS, service mode STRICT (PeerAuthentication ...)`.
pub fn tls_origin(c: &ClusterPlan) -> String {
    match &c.tls_origin {
        TlsOrigin::Rule { object, at } => {
            let mode = match c.tls {
                UpstreamTls::IstioMutual => "ISTIO_MUTUAL",
                UpstreamTls::Disable => "DISABLE",
                UpstreamTls::Auto => "not modelled",
            };
            format!("{object} ({at}) tls.mode {mode}")
        }
        TlsOrigin::Auto { service } => {
            format!(
                "no DestinationRule tls: auto mTLS, service mode {}",
                service.describe()
            )
        }
    }
}

/// The gateway's hop to endpoint `e` of cluster `c`: what the gateway sends (the
/// cluster's TLS, by the endpoint's `tlsMode` metadata under auto mTLS) against what
/// the pod takes (no sidecar: plaintext only; a sidecar: its mode at the endpoint
/// port).
pub fn hop(mesh: &Mesh, c: &ClusterPlan, e: &EndpointPlan) -> Hop {
    let pod = &mesh.pods[e.pod];
    let sends_mtls = match c.tls {
        UpstreamTls::IstioMutual => true,
        UpstreamTls::Disable => false,
        UpstreamTls::Auto => e.istio_tls,
    };
    let who = format!("pod {}/{} port {}", pod.namespace, pod.name, e.port);
    if !pod.has_sidecar() {
        if !sends_mtls {
            return Hop::Plaintext;
        }
        return Hop::Fails(format!(
            "cluster {} ({}): pod {}/{} has no sidecar to terminate mTLS: {}, 503 (UF)",
            c.name,
            tls_origin(c),
            pod.namespace,
            pod.name,
            super::HANDSHAKE_FAILS
        ));
    }
    let taken = mesh
        .inbound_mtls
        .get(&e.pod)
        .map(|w| w.for_port(e.port).clone())
        .unwrap_or_else(Decided::default_permissive);
    match (sends_mtls, taken.mode) {
        (true, m) if m.takes_mtls() => Hop::Mtls,
        (false, m) if m.takes_plaintext() => Hop::Plaintext,
        (true, _) => Hop::Fails(format!(
            "cluster {} sends mTLS to {who} ({}), but its sidecar takes only plaintext there: {}: {}, 503 (UF)",
            c.name,
            tls_origin(c),
            taken.describe(),
            super::HANDSHAKE_FAILS
        )),
        (false, _) => Hop::Fails(format!(
            "cluster {} sends plaintext to {who} ({}{}), but its sidecar takes only mTLS there: {}: {RESET_BY_STRICT}",
            c.name,
            tls_origin(c),
            if matches!(c.tls, UpstreamTls::Auto) {
                ": no tlsMode istio on this endpoint"
            } else {
                ""
            },
            taken.describe(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures(policies: &str) -> Fixtures {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pa.yaml"), policies).unwrap();
        crate::fixtures::load_dir(dir.path()).unwrap()
    }

    fn pa(ns: &str, name: &str, selector: Option<&str>, mode: &str, ports: &str) -> String {
        let sel = selector
            .map(|s| format!("  selector:\n    matchLabels:\n      app: {s}\n"))
            .unwrap_or_default();
        let mtls = if mode.is_empty() {
            String::new()
        } else {
            format!("  mtls:\n    mode: {mode}\n")
        };
        let ports = if ports.is_empty() {
            String::new()
        } else {
            format!("  portLevelMtls:\n{ports}")
        };
        let body = format!("{sel}{mtls}{ports}");
        let spec = if body.is_empty() {
            " {}\n".to_string()
        } else {
            format!("\n{body}")
        };
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:{spec}---\n")
    }

    fn labels(app: &str) -> Labels {
        [("app".to_string(), app.to_string())].into()
    }

    fn mode(fx: &Fixtures, ns: &str, app: &str, port: u16) -> (MtlsMode, Option<String>) {
        let d = PeerAuthn::new(fx)
            .workload(ns, &labels(app))
            .for_port(port)
            .clone();
        (d.mode, d.from.map(|s| format!("{} {}", s.object, s.field)))
    }

    /// The shipped ingress fixtures with `extra` written beside them and `edits`
    /// (file, from, to) applied.
    fn ingress_with(extra: &str, edits: &[(&str, &str, &str)]) -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ingress");
        for e in std::fs::read_dir(shipped).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
        // In place of the seed's own policy (namespace atlas STRICT).
        std::fs::write(dir.path().join("60-peerauthentication.yaml"), extra).unwrap();
        for (file, from, to) in edits {
            let path = dir.path().join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains(from), "{file}: {from:?}");
            std::fs::write(&path, text.replace(from, to)).unwrap();
        }
        Mesh::build(&crate::fixtures::load_dir(dir.path()).unwrap())
    }

    fn get(path: &str) -> crate::istio::SimRequest {
        crate::istio::SimRequest {
            service_port: 80,
            method: "GET".into(),
            host: "node".into(),
            path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_cluster_with_one_strict_endpoint_fails_only_that_endpoints_share() {
        // nb-rest v2 alone STRICT, nb-rest's rule DISABLE, the split's v1 destination
        // without subset (both pods): half of its 90% reaches v1, half fails at v2, and
        // the 10% to subset v2 fails whole.
        let mesh = ingress_with(
            &pa("atlas", "v2", Some("nb-rest"), "STRICT", "").replace(
                "      app: nb-rest\n",
                "      app: nb-rest\n      version: v2\n",
            ),
            &[
                (
                    "50-destinationrules.yaml",
                    "  host: nb-rest\n  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n",
                    "  host: nb-rest\n  trafficPolicy:\n    tls:\n      mode: DISABLE\n",
                ),
                ("40-virtualservices.yaml", "        subset: v1\n", ""),
            ],
        );
        let p = mesh.simulate(&get("/atlas-rest"));
        let mut got: Vec<(String, Option<u16>, Option<bool>)> = p
            .outcomes()
            .iter()
            .map(|b| (format!("{:.0}", b.share * 100.0), b.status, b.mtls))
            .collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                ("10".to_string(), Some(503), None),
                ("45".to_string(), Some(200), Some(false)),
                ("45".to_string(), Some(503), None),
            ],
            "{:#?}",
            p.outcomes()
        );
        let failing: Vec<String> = p
            .outcomes()
            .into_iter()
            .filter(|b| b.status == Some(503))
            .map(|b| b.reason)
            .collect();
        assert!(
            failing
                .iter()
                .all(|r| r.contains("STRICT (PeerAuthentication atlas/v2")
                    && r.contains("the sidecar closes the connection: 503 (UC)")),
            "{failing:#?}"
        );
        assert!(
            failing.iter().any(|r| r.contains("(1 of 2 endpoint(s))")),
            "{failing:#?}"
        );
        // Negative: with the pinned v2 route every request fails.
        let pinned = crate::istio::SimRequest {
            headers: crate::istio::headers::Headers::from([(
                "x-atlas-version".to_string(),
                vec!["v2".to_string()],
            )]),
            ..get("/atlas-rest")
        };
        let p = mesh.simulate(&pinned);
        assert_eq!(p.outcomes().len(), 1);
        assert_eq!(p.outcomes()[0].status, Some(503));
    }

    #[test]
    fn workload_beats_namespace_beats_mesh_and_unset_inherits() {
        let fx = fixtures(
            &[
                pa("istio-system", "mesh", None, "STRICT", ""),
                pa("atlas", "ns", None, "DISABLE", ""),
                pa("atlas", "authz", Some("authz"), "PERMISSIVE", ""),
                pa("atlas", "ui", Some("atlas-ui"), "UNSET", ""),
                pa("other", "other-ns", None, "", ""),
            ]
            .concat(),
        );
        let want = |m, s: &str| (m, Some(s.to_string()));
        assert_eq!(
            mode(&fx, "atlas", "authz", 8080),
            want(
                MtlsMode::Permissive,
                "PeerAuthentication atlas/authz mtls.mode PERMISSIVE"
            )
        );
        // UNSET on the workload: the namespace's.
        assert_eq!(
            mode(&fx, "atlas", "atlas-ui", 8080),
            want(
                MtlsMode::Disable,
                "PeerAuthentication atlas/ns mtls.mode DISABLE"
            )
        );
        // A namespace-wide policy without mtls: the mesh's.
        assert_eq!(
            mode(&fx, "other", "x", 8080),
            want(
                MtlsMode::Strict,
                "PeerAuthentication istio-system/mesh mtls.mode STRICT"
            )
        );
        // A namespace without policy: the mesh's.
        assert_eq!(
            mode(&fx, "third", "x", 1),
            want(
                MtlsMode::Strict,
                "PeerAuthentication istio-system/mesh mtls.mode STRICT"
            )
        );
        // Negative: another namespace's workload policy does not apply.
        assert_eq!(mode(&fx, "other", "authz", 8080).0, MtlsMode::Strict);
        let p = PeerAuthn::new(&fx);
        assert_eq!(p.service_mode("atlas").mode, MtlsMode::Disable);
        assert_eq!(p.service_mode("other").mode, MtlsMode::Strict);
        assert_eq!(p.namespace_mode("third").unwrap().mode, MtlsMode::Strict);
    }

    #[test]
    fn without_any_policy_everything_is_permissive_by_default() {
        let fx = fixtures(&pa("atlas", "only-authz", Some("authz"), "STRICT", ""));
        assert_eq!(
            mode(&fx, "atlas", "atlas-ui", 8080),
            (MtlsMode::Permissive, None)
        );
        let p = PeerAuthn::new(&fx);
        assert!(p.namespace_mode("atlas").is_none());
        assert_eq!(p.service_mode("atlas").mode, MtlsMode::Permissive);
    }

    #[test]
    fn port_level_modes_apply_to_their_workload_port_and_unset_takes_the_workloads() {
        let fx = fixtures(
            &[
                pa("atlas", "ns", None, "STRICT", ""),
                pa(
                    "atlas",
                    "authz",
                    Some("authz"),
                    "",
                    "    8080:\n      mode: DISABLE\n    \"9090\":\n      mode: UNSET\n    9091: {}\n",
                ),
            ]
            .concat(),
        );
        assert_eq!(
            mode(&fx, "atlas", "authz", 8080),
            (
                MtlsMode::Disable,
                Some("PeerAuthentication atlas/authz portLevelMtls 8080 DISABLE".into())
            )
        );
        // UNSET ports and other ports: the workload's mode (here the namespace's).
        for port in [9090, 9091, 80] {
            assert_eq!(
                mode(&fx, "atlas", "authz", port).0,
                MtlsMode::Strict,
                "{port}"
            );
        }
    }

    #[test]
    fn the_first_by_name_wins_and_root_selectors_and_extra_namespace_policies_are_ignored() {
        let fx = fixtures(
            &[
                pa("atlas", "b-ns", None, "DISABLE", ""),
                pa("atlas", "a-ns", None, "STRICT", ""),
                pa("atlas", "z-authz", Some("authz"), "DISABLE", ""),
                pa("atlas", "m-authz", Some("authz"), "PERMISSIVE", ""),
                pa("istio-system", "root-authz", Some("authz"), "DISABLE", ""),
            ]
            .concat(),
        );
        assert_eq!(
            mode(&fx, "atlas", "authz", 8080).1.unwrap(),
            "PeerAuthentication atlas/m-authz mtls.mode PERMISSIVE"
        );
        assert_eq!(mode(&fx, "atlas", "x", 8080).0, MtlsMode::Strict);
        // The root namespace's selector policy reaches no workload, even its own.
        assert_eq!(
            mode(&fx, "istio-system", "authz", 8080).0,
            MtlsMode::Permissive
        );
        let p = PeerAuthn::new(&fx);
        let ignored: Vec<&str> = p.ignored.iter().map(|(i, _)| i.name.as_str()).collect();
        assert_eq!(ignored, ["b-ns", "root-authz"]);
    }

    #[test]
    fn a_mesh_wide_unset_is_permissive_and_namespaces_inherit_it() {
        let fx = fixtures(
            &[
                pa("istio-system", "mesh", None, "", ""),
                pa("atlas", "ns", None, "UNSET", ""),
            ]
            .concat(),
        );
        let p = PeerAuthn::new(&fx);
        assert_eq!(p.service_mode("atlas").mode, MtlsMode::Permissive);
        assert_eq!(
            p.service_mode("atlas").from.unwrap().object,
            "PeerAuthentication istio-system/mesh"
        );
    }

    #[test]
    fn istio_refuses_port_level_modes_without_selector_and_unknown_modes() {
        let fx = fixtures(
            &[
                pa(
                    "atlas",
                    "wide",
                    None,
                    "STRICT",
                    "    8080:\n      mode: DISABLE\n",
                ),
                pa("atlas", "typo", Some("authz"), "STRICTT", ""),
                pa(
                    "atlas",
                    "port",
                    Some("authz"),
                    "STRICT",
                    "    http:\n      mode: DISABLE\n",
                ),
                pa(
                    "atlas",
                    "ok",
                    Some("authz"),
                    "STRICT",
                    "    8080:\n      mode: DISABLE\n",
                ),
            ]
            .concat(),
        );
        let names: Vec<&str> = fx
            .peer_authentications
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["ok"]);
        let refused: Vec<String> = fx.refused.iter().map(|r| r.to_string()).collect();
        assert_eq!(refused.len(), 3, "{refused:#?}");
        assert!(
            refused[0].contains("atlas/wide") && refused[0].contains("cannot have port level mTLS")
        );
        assert!(refused[1].contains("atlas/typo") && refused[1].contains("\"STRICTT\""));
        assert!(refused[2].contains("spec.portLevelMtls.http") && refused[2].contains("1..65535"));
        // No field warnings: every field of the API is read.
        assert!(fx.warnings.is_empty(), "{:#?}", fx.warnings);
    }
}

//! Pods the way Kubernetes and Istio's injector would make them from the fixtures'
//! Deployments: replicas, labels, service account, and whether (and how) a sidecar or
//! the gateway template is injected.

use crate::fixtures::k8s::{Deployment, Labels};
use crate::fixtures::{Fixtures, Item, Source, Warning};

/// Image name prefix of the project's stub backend (built from the Dockerfile).
pub const STUB_IMAGE: &str = "meshcheck/stub";

/// What a pod is once scheduled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodRole {
    /// An Istio gateway proxy (gateway injection template, image `auto`).
    Gateway,
    /// An application pod whose containers all run the stub backend.
    App,
    /// A pod that would not run, or that meshcheck cannot run: the reason.
    NotRunning(String),
}

/// The shape Istio injects its proxy in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SidecarShape {
    /// `istio-proxy` as a regular container (Istio <= 1.26, or nodes older than 1.33).
    Classic,
    /// `istio-proxy` as an init container with `restartPolicy: Always` (Istio 1.27+).
    #[default]
    Native,
}

#[derive(Debug, Clone)]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub deployment: String,
    pub labels: Labels,
    pub service_account: String,
    pub role: PodRole,
    /// Whether Istio's injector adds a proxy to this pod (for gateways: the proxy is the pod).
    pub injected: bool,
    /// Container name -> (port name, port) of the template.
    pub container_ports: Vec<(Option<String>, u16)>,
    /// The stub container's environment, as written (resolved by the target).
    pub env: Vec<crate::fixtures::k8s::EnvVar>,
    /// The template's annotations (`proxy.istio.io/config`, ...).
    pub annotations: Labels,
    pub source: Source,
}

impl PodPlan {
    /// `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        spiffe_id(trust_domain, &self.namespace, &self.service_account)
    }

    /// A container env var as the kubelet resolves it (values and the downward API
    /// fields that do not depend on the running pod's address).
    pub fn env_value(&self, name: &str) -> Option<String> {
        let var = self.env.iter().find(|v| v.name == name)?;
        self.resolve_env(var, None)
    }

    /// The value of `var` in this pod; `status.podIP` needs the address it runs on.
    pub fn resolve_env(
        &self,
        var: &crate::fixtures::k8s::EnvVar,
        pod_ip: Option<std::net::IpAddr>,
    ) -> Option<String> {
        if let Some(v) = &var.value {
            return Some(v.clone());
        }
        let path = var
            .value_from
            .as_ref()?
            .field_ref
            .as_ref()?
            .field_path
            .as_str();
        match path {
            "metadata.name" => Some(self.name.clone()),
            "metadata.namespace" => Some(self.namespace.clone()),
            "spec.serviceAccountName" => Some(self.service_account.clone()),
            "status.podIP" => pod_ip.map(|ip| ip.to_string()),
            p => p
                .strip_prefix("metadata.labels['")
                .and_then(|r| r.strip_suffix("']"))
                .map(|k| self.labels.get(k).cloned().unwrap_or_default()),
        }
    }

    pub fn has_sidecar(&self) -> bool {
        self.role == PodRole::App && self.injected
    }

    /// The port a Service `targetPort` names, resolved against this pod's containers.
    pub fn resolve_port(&self, target: &crate::fixtures::k8s::IntOrString) -> Option<u16> {
        match target {
            crate::fixtures::k8s::IntOrString::Int(p) => Some(*p),
            crate::fixtures::k8s::IntOrString::String(name) => self
                .container_ports
                .iter()
                .find(|(n, _)| n.as_deref() == Some(name.as_str()))
                .map(|(_, p)| *p),
        }
    }
}

pub fn spiffe_id(trust_domain: &str, namespace: &str, sa: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}")
}

/// Istio's injection decision for a pod (istio-discovery mutatingwebhook.yaml):
/// namespace `istio-injection=enabled` (or `istio.io/rev`) selects the pod unless it
/// opts out with `sidecar.istio.io/inject="false"`; in a namespace with neither
/// label a pod opts in with `sidecar.istio.io/inject="true"`; `istio-injection=disabled`
/// never injects.
pub fn injection(ns_labels: &Labels, pod_labels: &Labels, pod_annotations: &Labels) -> bool {
    let pod_flag = pod_labels
        .get("sidecar.istio.io/inject")
        .or_else(|| pod_annotations.get("sidecar.istio.io/inject"))
        .map(|v| v.as_str());
    match ns_labels.get("istio-injection").map(|v| v.as_str()) {
        Some("enabled") => pod_flag != Some("false"),
        Some(_) => false,
        None if ns_labels.contains_key("istio.io/rev") => pod_flag != Some("false"),
        None => pod_flag == Some("true"),
    }
}

/// A stable 10-hex-digit hash of a Deployment's template, like a ReplicaSet's.
fn template_hash(d: &Item<Deployment>) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!(
        "{}/{}/{:?}",
        d.namespace, d.name, d.spec.spec.template
    ));
    h.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// Every pod the fixtures' Deployments create, in fixture order.
pub fn plan_pods(fx: &Fixtures, warnings: &mut Vec<Warning>) -> Vec<PodPlan> {
    let mut pods = Vec::new();
    for d in &fx.deployments {
        let tmpl = &d.spec.spec.template;
        let labels = tmpl.metadata.labels.clone();
        let sel = &d.spec.spec.selector;
        if !sel.match_expressions.is_empty() {
            warnings.push(Warning {
                at: d.source.clone(),
                object: d.describe(),
                message: "selector.matchExpressions is not modelled by meshcheck".into(),
                field: None,
            });
        }
        if sel.match_labels.is_empty() || !crate::fixtures::k8s::selects(&sel.match_labels, &labels)
        {
            warnings.push(Warning {
                at: d.source.clone(),
                object: d.describe(),
                message: "spec.selector does not match the template labels: the API server rejects this Deployment, no pod runs".into(),
                field: None,
            });
            continue;
        }
        let ns_labels = fx.namespace_labels(&d.namespace);
        if !fx.namespaces.iter().any(|n| n.name == d.namespace) && d.namespace != "default" {
            warnings.push(Warning {
                at: d.source.clone(),
                object: d.describe(),
                message: format!("namespace {} is not defined by the fixtures", d.namespace),
                field: None,
            });
        }
        let injected = injection(&ns_labels, &labels, &tmpl.metadata.annotations);
        let gateway_template = tmpl
            .metadata
            .annotations
            .get("inject.istio.io/templates")
            .map(|t| t.split(',').any(|t| t.trim() == "gateway"))
            .unwrap_or(false);
        let containers = &tmpl.spec.containers;
        let role = if gateway_template {
            if injected {
                PodRole::Gateway
            } else {
                PodRole::NotRunning(
                    "gateway template without injection: image `auto` cannot be pulled".into(),
                )
            }
        } else if containers.is_empty() {
            PodRole::NotRunning("no containers".into())
        } else if let Some(c) = containers.iter().find(|c| {
            !c.image
                .as_deref()
                .map(|i| i.starts_with(STUB_IMAGE))
                .unwrap_or(false)
        }) {
            PodRole::NotRunning(format!(
                "container {} runs image {}; the local target runs only {STUB_IMAGE}",
                c.name,
                c.image.as_deref().unwrap_or("(none)")
            ))
        } else {
            PodRole::App
        };
        if let PodRole::NotRunning(why) = &role {
            warnings.push(Warning {
                at: d.source.clone(),
                object: d.describe(),
                message: format!("pods will not run: {why}"),
                field: None,
            });
        }
        let hash = template_hash(d);
        let replicas = d.spec.spec.replicas.unwrap_or(1);
        for r in 0..replicas {
            let suffix: String = {
                use sha2::{Digest, Sha256};
                let h = Sha256::digest(format!("{hash}-{r}"));
                const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                h.iter()
                    .take(5)
                    .map(|b| ALPHA[*b as usize % ALPHA.len()] as char)
                    .collect()
            };
            let mut pod_labels = labels.clone();
            if injected && role == PodRole::App {
                pod_labels.insert("security.istio.io/tlsMode".into(), "istio".into());
                let canonical = labels
                    .get("app.kubernetes.io/name")
                    .or_else(|| labels.get("app"))
                    .cloned()
                    .unwrap_or_else(|| d.name.clone());
                pod_labels.insert("service.istio.io/canonical-name".into(), canonical);
                let rev = labels
                    .get("app.kubernetes.io/version")
                    .or_else(|| labels.get("version"))
                    .cloned()
                    .unwrap_or_else(|| "latest".into());
                pod_labels.insert("service.istio.io/canonical-revision".into(), rev);
            }
            pods.push(PodPlan {
                namespace: d.namespace.clone(),
                name: format!("{}-{hash}-{suffix}", d.name),
                deployment: d.name.clone(),
                labels: pod_labels,
                service_account: tmpl
                    .spec
                    .service_account_name
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                role: role.clone(),
                injected,
                container_ports: containers
                    .iter()
                    .flat_map(|c| c.ports.iter().map(|p| (p.name.clone(), p.container_port)))
                    .collect(),
                env: containers
                    .first()
                    .map(|c| c.env.clone())
                    .unwrap_or_default(),
                annotations: tmpl.metadata.annotations.clone(),
                source: d.source.clone(),
            });
        }
    }
    pods
}

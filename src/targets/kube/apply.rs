//! Server-side apply of the fixtures, in dependency order, and their cleanup.

use super::error::KubeError;
use crate::fixtures::{Object, Source};
use ::kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use ::kube::core::GroupVersionKind;
use ::kube::discovery::{self, ApiCapabilities, ApiResource, Scope};
use ::kube::Client;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// How [`apply_all`] applies the fixtures.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The server-side apply field manager.
    pub field_manager: String,
    /// Replace container images starting with `.0` (e.g. `meshcheck/stub`) by `.1`
    /// (the image just built) in workloads' containers and initContainers.
    pub image_rewrite: Option<(String, String)>,
    /// Rename every namespace `N` of the fixtures to `prefix + N`, everywhere the
    /// fixtures refer to it (see [`NamespaceRenamer`]).
    pub namespace_prefix: Option<String>,
    /// How long a kind may stay unserved (its CRD not yet established) before
    /// applying an object of it fails.
    pub crd_timeout: Duration,
    /// Take over objects that exist already and that meshcheck did not create
    /// (server-side apply with `force` would otherwise silently become their
    /// manager). Without it such an object is an error naming it.
    pub adopt: bool,
    /// The most `spec.progressDeadlineSeconds` a Deployment gets (lowered to it when
    /// unset or larger), so that it agrees with the rollout wait.
    pub progress_deadline: Option<Duration>,
    /// `--revision R`: Namespaces asking for injection get `istio.io/rev=R` instead
    /// of `istio-injection=enabled` (see [`super::injection::use_revision`]).
    pub revision: Option<String>,
    /// LoadBalancer Services are applied as NodePort (`--service-type NodePort`).
    pub node_port_services: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            field_manager: "meshcheck".to_string(),
            image_rewrite: None,
            namespace_prefix: None,
            crd_timeout: Duration::from_secs(60),
            adopt: false,
            progress_deadline: None,
            revision: None,
            node_port_services: false,
        }
    }
}

/// One object [`apply_all`] applied, as it is in the cluster (after renaming).
#[derive(Debug, Clone)]
pub struct Applied {
    pub kind: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
    pub api_resource: ApiResource,
    /// Whether meshcheck created it (it did not exist before): only those are
    /// deleted by [`delete_applied`].
    pub created: bool,
}

impl Applied {
    /// `VirtualService atlas/nb-rest`, `Namespace atlas`.
    pub fn describe(&self) -> String {
        crate::fixtures::describe(&self.kind, &self.namespace, &self.name)
    }
}

/// First delay between two discovery attempts of a kind not served yet; doubled
/// each time up to [`MAX_DISCOVERY_BACKOFF`].
const FIRST_DISCOVERY_BACKOFF: Duration = Duration::from_millis(100);
const MAX_DISCOVERY_BACKOFF: Duration = Duration::from_secs(5);

/// Applies `objects` with server-side apply (forcing conflicts, as `field_manager`),
/// after the rewrites of `opts`, in dependency order (see [`apply_order`]).
///
/// Kinds are resolved with discovery; a kind not served yet (a CRD just installed)
/// is retried with backoff for `opts.crd_timeout`. Stops at the first failure.
/// On failure the objects applied so far are lost to the caller: use
/// [`apply_all_into`] to keep them for cleanup.
pub async fn apply_all(
    client: &Client,
    objects: &[Object],
    opts: &ApplyOptions,
) -> Result<Vec<Applied>, KubeError> {
    let mut applied = Vec::new();
    apply_all_into(client, objects, opts, &mut applied).await?;
    Ok(applied)
}

/// [`apply_all`], recording each object in `applied` as soon as it is applied, so
/// that a caller can clean up after a failure halfway.
pub async fn apply_all_into(
    client: &Client,
    objects: &[Object],
    opts: &ApplyOptions,
    applied: &mut Vec<Applied>,
) -> Result<(), KubeError> {
    apply_each(client, objects, opts, |a| applied.push(a)).await
}

/// [`apply_all`], handing each object to `sink` as soon as it is applied (e.g. into
/// a list an interrupt handler can read, so a Ctrl-C mid-apply still cleans up).
pub async fn apply_each(
    client: &Client,
    objects: &[Object],
    opts: &ApplyOptions,
    mut sink: impl FnMut(Applied),
) -> Result<(), KubeError> {
    let renamer = opts
        .namespace_prefix
        .as_deref()
        .map(|prefix| NamespaceRenamer::new(prefix, objects));
    let isolation = opts
        .namespace_prefix
        .as_deref()
        .map(|prefix| Isolation::new(prefix, objects));
    let mut resolver = Resolver::new(client, opts.crd_timeout);
    for object in apply_order(objects) {
        let mut prepared = prepare(object, opts, renamer.as_ref())?;
        if let Some(i) = &isolation {
            i.apply(object, &mut prepared.body);
        }
        let (resource, caps) = resolver.resolve(object, &prepared).await?;
        sink(apply_one(client, object, prepared, resource, &caps, opts).await?);
    }
    Ok(())
}

/// Deletes the objects of `applied` that meshcheck created, last applied first.
/// Objects already gone are fine. Tries every object, and returns the first failure.
pub async fn delete_applied(client: &Client, applied: &[Applied]) -> Result<(), KubeError> {
    let mut first_error = None;
    for a in applied.iter().rev().filter(|a| a.created) {
        let api: Api<DynamicObject> = if a.namespace.is_empty() {
            Api::all_with(client.clone(), &a.api_resource)
        } else {
            Api::namespaced_with(client.clone(), &a.namespace, &a.api_resource)
        };
        tracing::debug!("deleting {}", a.describe());
        match api.delete(&a.name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(::kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                let e = KubeError::from_kube(e, "delete", &a.describe(), None);
                tracing::warn!("{e}");
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The order objects are applied in: Namespaces (and CRDs) first, then the other
/// core objects (ServiceAccounts, ConfigMaps, Secrets, Services...), workloads,
/// other Istio configuration, DestinationRules, Gateways and VirtualServices last
/// (so no route points at an undefined subset). Stable within a class.
pub fn apply_order(objects: &[Object]) -> Vec<&Object> {
    let mut sorted: Vec<&Object> = objects.iter().collect();
    sorted.sort_by_key(|o| apply_class(&o.kind, &o.api_version));
    sorted
}

fn apply_class(kind: &str, api_version: &str) -> u8 {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match kind {
        "Namespace" | "CustomResourceDefinition" => 0,
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "CronJob" | "Pod" => 2,
        "DestinationRule" => 4,
        "Gateway" => 5,
        "VirtualService" | "HTTPRoute" | "GRPCRoute" | "TCPRoute" | "TLSRoute" => 6,
        _ if group.ends_with("istio.io") || group == "gateway.networking.k8s.io" => 3,
        _ => 1,
    }
}

/// An object ready to send: its final namespace and name, and the body.
struct Prepared {
    /// The namespace from the fixtures (after renaming); may be empty.
    namespace: String,
    name: String,
    body: Value,
}

fn prepare(
    object: &Object,
    opts: &ApplyOptions,
    renamer: Option<&NamespaceRenamer>,
) -> Result<Prepared, KubeError> {
    let bad = |message: &str| KubeError::BadObject {
        object: object.describe(),
        source: object.source.clone(),
        message: message.to_string(),
    };
    if object.api_version.is_empty() || object.kind.is_empty() {
        return Err(bad("it has no apiVersion or kind"));
    }
    if object.name.is_empty() {
        return Err(bad("it has no metadata.name"));
    }
    let mut body = object.raw.clone();
    if !body.is_object() {
        return Err(bad("it is not a mapping"));
    }
    body["apiVersion"] = Value::String(object.api_version.clone());
    body["kind"] = Value::String(object.kind.clone());
    strip_server_fields(&mut body);
    mark_managed(&mut body);
    let mut namespace = object.namespace.clone();
    let mut name = object.name.clone();
    if let Some((from, to)) = &opts.image_rewrite {
        rewrite_images(&object.kind, &mut body, from, to);
    }
    if let Some(deadline) = opts.progress_deadline {
        if object.kind == "Deployment" {
            if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
                let max = deadline.as_secs().max(1);
                let set = spec.get("progressDeadlineSeconds").and_then(Value::as_u64);
                if set.is_none_or(|s| s > max) {
                    spec.insert("progressDeadlineSeconds".into(), Value::from(max));
                }
            }
        }
    }
    if opts.node_port_services && object.kind == "Service" && body["spec"]["type"] == "LoadBalancer"
    {
        body["spec"]["type"] = Value::String("NodePort".into());
    }
    if let Some(rev) = &opts.revision {
        super::injection::use_revision(&object.kind, &mut body, rev);
    }
    if let Some(r) = renamer {
        namespace = r.rename(&namespace);
        if object.kind == "Namespace" {
            name = r.rename(&name);
        }
        r.rewrite_references(object, &mut body);
    }
    body["metadata"]["name"] = Value::String(name.clone());
    Ok(Prepared {
        namespace,
        name,
        body,
    })
}

/// The label every applied object carries. Besides naming who applied it, it is a
/// field meshcheck's server-side apply owns: the API server drops the managedFields
/// entry of a manager that owns no field, so an object sent with nothing but its name
/// (a bare Namespace) would otherwise not show meshcheck as its manager, and the next
/// run would take it for someone else's.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meshcheck");

fn mark_managed(body: &mut Value) {
    let meta = &mut body["metadata"];
    if !meta["labels"].is_object() {
        meta["labels"] = Value::Object(Default::default());
    }
    meta["labels"][MANAGED_BY.0] = Value::String(MANAGED_BY.1.into());
}

/// Removes what a `kubectl get -o yaml` dump carries and an apply must not send.
fn strip_server_fields(body: &mut Value) {
    if let Some(obj) = body.as_object_mut() {
        obj.remove("status");
    }
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            meta.remove(f);
        }
    }
}

/// Whether `image` is one of the images `from` designates: `from` itself, or
/// `from` followed by a tag or digest (`meshcheck/stub:latest`,
/// `meshcheck/stub@sha256:...`); `meshcheck/stubby` is another image. A `from`
/// ending in `:`, `@` or `/` is a plain prefix.
pub fn image_matches(image: &str, from: &str) -> bool {
    if from.is_empty() {
        return false;
    }
    match image.strip_prefix(from) {
        None => false,
        Some(rest) => {
            rest.is_empty()
                || rest.starts_with(':')
                || rest.starts_with('@')
                || from.ends_with([':', '@', '/'])
        }
    }
}

/// Rewrites the images of workload `kind`'s pod template (or of a Pod).
fn rewrite_images(kind: &str, body: &mut Value, from: &str, to: &str) {
    let pod_spec = match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            body.pointer_mut("/spec/template/spec")
        }
        "CronJob" => body.pointer_mut("/spec/jobTemplate/spec/template/spec"),
        "Pod" => body.pointer_mut("/spec"),
        _ => None,
    };
    let Some(pod_spec) = pod_spec else { return };
    for list in ["containers", "initContainers"] {
        let Some(containers) = pod_spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers {
            if let Some(image) = c.get_mut("image") {
                if image.as_str().is_some_and(|i| image_matches(i, from)) {
                    *image = Value::String(to.to_string());
                }
            }
        }
    }
}

/// Renames the fixtures' namespaces (`N` -> `prefix + N`) and the references to them.
///
/// Rewritten: `metadata.namespace`, Namespace names, and in the `spec` of Istio
/// (`*.istio.io`) and Gateway API objects: `gateways` entries `N/name`, `hosts` /
/// `host` values `N/host` and FQDNs `x.N.svc.cluster.local` / `x.N.svc`,
/// `exportTo` / `namespaces` / `notNamespaces` lists, `namespace` fields (delegates,
/// parentRefs, backendRefs), and principals `cluster.local/ns/N/sa/x`; plus
/// RoleBinding `subjects[].namespace`. Namespaces that are not the fixtures' own
/// (`istio-system`, `*`, `.`) stay as they are.
#[derive(Debug, Clone)]
pub struct NamespaceRenamer {
    prefix: String,
    namespaces: BTreeSet<String>,
}

impl NamespaceRenamer {
    /// The fixtures' namespaces are those of their objects and their Namespaces.
    pub fn new(prefix: &str, objects: &[Object]) -> Self {
        let mut namespaces = BTreeSet::new();
        for o in objects {
            if !o.namespace.is_empty() {
                namespaces.insert(o.namespace.clone());
            }
            if o.kind == "Namespace" && o.api_version == "v1" {
                namespaces.insert(o.name.clone());
            }
        }
        NamespaceRenamer {
            prefix: prefix.to_string(),
            namespaces,
        }
    }

    /// `prefix + ns` when `ns` is one of the fixtures' namespaces, else `ns`.
    pub fn rename(&self, ns: &str) -> String {
        if self.namespaces.contains(ns) {
            format!("{}{ns}", self.prefix)
        } else {
            ns.to_string()
        }
    }

    /// Rewrites a host: `N/host` (Gateway servers, Sidecar egress) and the
    /// namespace label of `x.N.svc.cluster.local` / `x.N.svc`.
    pub fn rename_host(&self, host: &str) -> String {
        if let Some((ns, rest)) = host.split_once('/') {
            return format!("{}/{}", self.rename(ns), self.rename_host(rest));
        }
        let labels: Vec<&str> = host.split('.').collect();
        let ns_index = if host.ends_with(".svc.cluster.local") && labels.len() >= 5 {
            Some(labels.len() - 4)
        } else if host.ends_with(".svc") && labels.len() >= 3 {
            Some(labels.len() - 2)
        } else {
            None
        };
        match ns_index {
            Some(i) if self.namespaces.contains(labels[i]) => {
                let mut labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
                labels[i] = self.rename(&labels[i]);
                labels.join(".")
            }
            _ => host.to_string(),
        }
    }

    /// `N/name` -> `prefix+N/name`; `name` and `mesh` stay.
    fn rename_gateway_ref(&self, gw: &str) -> String {
        match gw.split_once('/') {
            Some((ns, name)) => format!("{}/{name}", self.rename(ns)),
            None => gw.to_string(),
        }
    }

    /// `cluster.local/ns/N/sa/x` -> `cluster.local/ns/prefix+N/sa/x`.
    fn rename_principal(&self, p: &str) -> String {
        let mut parts: Vec<String> = p.split('/').map(str::to_string).collect();
        for i in 0..parts.len().saturating_sub(1) {
            if parts[i] == "ns" {
                parts[i + 1] = self.rename(&parts[i + 1]);
                break;
            }
        }
        parts.join("/")
    }

    fn rewrite_references(&self, object: &Object, body: &mut Value) {
        if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            if let Some(Value::String(ns)) = meta.get_mut("namespace") {
                *ns = self.rename(ns);
            }
        }
        let group = object.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        if group.ends_with("istio.io") || group == "gateway.networking.k8s.io" {
            if let Some(spec) = body.get_mut("spec") {
                self.walk(None, spec);
            }
        }
        if group == "gateway.networking.k8s.io" {
            if let Some(spec) = body.get_mut("spec") {
                self.rewrite_gateway_api(spec);
            }
        }
        if group == "rbac.authorization.k8s.io" {
            if let Some(subjects) = body.get_mut("subjects").and_then(Value::as_array_mut) {
                for s in subjects {
                    if let Some(Value::String(ns)) = s.get_mut("namespace") {
                        *ns = self.rename(ns);
                    }
                }
            }
        }
    }

    /// What refers to a namespace in Gateway API specs besides `namespace` fields: a
    /// Gateway's `Hostname` addresses (the Service of a manual deployment,
    /// `svc.ns.svc.cluster.local`), and label selectors on the namespace's name
    /// (`kubernetes.io/metadata.name`, which the API server sets to the namespace's
    /// name, e.g. in `allowedRoutes.namespaces.selector`).
    fn rewrite_gateway_api(&self, value: &mut Value) {
        const NAME_LABEL: &str = "kubernetes.io/metadata.name";
        match value {
            Value::Object(map) => {
                if let Some(Value::Array(addresses)) = map.get_mut("addresses") {
                    for a in addresses {
                        if a.get("type").and_then(Value::as_str) == Some("Hostname") {
                            if let Some(Value::String(v)) = a.get_mut("value") {
                                *v = self.rename_host(v);
                            }
                        }
                    }
                }
                if let Some(Value::String(v)) = map
                    .get_mut("matchLabels")
                    .and_then(|m| m.get_mut(NAME_LABEL))
                {
                    *v = self.rename(v);
                }
                if let Some(Value::Array(exprs)) = map.get_mut("matchExpressions") {
                    for e in exprs {
                        if e.get("key").and_then(Value::as_str) != Some(NAME_LABEL) {
                            continue;
                        }
                        if let Some(Value::Array(values)) = e.get_mut("values") {
                            for v in values {
                                if let Value::String(ns) = v {
                                    *ns = self.rename(ns);
                                }
                            }
                        }
                    }
                }
                for (k, v) in map.iter_mut() {
                    if k != "addresses" {
                        self.rewrite_gateway_api(v);
                    }
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.rewrite_gateway_api(v);
                }
            }
            _ => {}
        }
    }

    /// Walks a spec, rewriting the strings under the keys that hold references.
    fn walk(&self, key: Option<&str>, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    self.walk(Some(k), v);
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.walk(key, v);
                }
            }
            Value::String(s) => {
                let new = match key {
                    Some("gateways") => self.rename_gateway_ref(s),
                    Some("hosts" | "host") => self.rename_host(s),
                    Some("exportTo" | "namespaces" | "notNamespaces" | "namespace") => {
                        self.rename(s)
                    }
                    Some("principals" | "notPrincipals") => self.rename_principal(s),
                    _ => return,
                };
                *s = new;
            }
            _ => {}
        }
    }
}

/// Resolves kinds to API resources with discovery, once per apiVersion/kind.
struct Resolver<'a> {
    client: &'a Client,
    timeout: Duration,
    cache: HashMap<(String, String), (ApiResource, ApiCapabilities)>,
}

impl<'a> Resolver<'a> {
    fn new(client: &'a Client, timeout: Duration) -> Self {
        Resolver {
            client,
            timeout,
            cache: HashMap::new(),
        }
    }

    async fn resolve(
        &mut self,
        object: &Object,
        prepared: &Prepared,
    ) -> Result<(ApiResource, ApiCapabilities), KubeError> {
        let key = (object.api_version.clone(), object.kind.clone());
        if let Some(found) = self.cache.get(&key) {
            return Ok(found.clone());
        }
        let describe = crate::fixtures::describe(&object.kind, &prepared.namespace, &prepared.name);
        let gvk = match object.api_version.split_once('/') {
            Some((group, version)) => GroupVersionKind::gvk(group, version, &object.kind),
            None => GroupVersionKind::gvk("", &object.api_version, &object.kind),
        };
        let started = Instant::now();
        let mut backoff = FIRST_DISCOVERY_BACKOFF;
        let found = loop {
            let last_error = match discovery::pinned_kind(self.client, &gvk).await {
                Ok(found) => break found,
                Err(e) => match not_served(&e) {
                    Some(why) => why,
                    None => {
                        return Err(KubeError::from_kube(
                            e,
                            "discover the API of",
                            &describe,
                            Some(&object.source),
                        ))
                    }
                },
            };
            let waited = started.elapsed();
            if waited >= self.timeout {
                return Err(KubeError::KindNotServed {
                    object: describe,
                    source: object.source.clone(),
                    api_version: object.api_version.clone(),
                    waited,
                    last_error,
                });
            }
            tracing::debug!(
                "{}: kind {} of {} is not served yet ({last_error}); retrying",
                object.source,
                object.kind,
                object.api_version
            );
            tokio::time::sleep(backoff.min(self.timeout - waited)).await;
            backoff = (backoff * 2).min(MAX_DISCOVERY_BACKOFF);
        };
        self.cache.insert(key, found.clone());
        Ok(found)
    }
}

/// Why discovery says a kind is not served (yet), or `None` for other failures.
fn not_served(e: &::kube::Error) -> Option<String> {
    use ::kube::error::DiscoveryError;
    match e {
        ::kube::Error::Api(s) if s.code == 404 => Some(format!(
            "404 {}",
            if s.message.is_empty() {
                &s.reason
            } else {
                &s.message
            }
        )),
        // The group is served but not (yet) with this kind.
        ::kube::Error::Discovery(DiscoveryError::MissingKind(_)) => {
            Some("the group version does not list the kind".to_string())
        }
        // An aggregated or freshly registered group not ready yet.
        ::kube::Error::Api(s) if s.code == 503 => Some(format!("503 {}", s.message)),
        _ => None,
    }
}

async fn apply_one(
    client: &Client,
    object: &Object,
    mut prepared: Prepared,
    resource: ApiResource,
    caps: &ApiCapabilities,
    opts: &ApplyOptions,
) -> Result<Applied, KubeError> {
    let source: &Source = &object.source;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            if prepared.namespace.is_empty() {
                prepared.namespace = "default".to_string();
            }
            prepared.body["metadata"]["namespace"] = Value::String(prepared.namespace.clone());
            Api::namespaced_with(client.clone(), &prepared.namespace, &resource)
        }
        Scope::Cluster => {
            prepared.namespace.clear();
            if let Some(meta) = prepared.body["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            Api::all_with(client.clone(), &resource)
        }
    };
    let describe = crate::fixtures::describe(&object.kind, &prepared.namespace, &prepared.name);
    let existing = api
        .get_metadata_opt(&prepared.name)
        .await
        .map_err(|e| KubeError::from_kube(e, "look up", &describe, Some(source)))?;
    let existed = existing.is_some();
    if let Some(meta) = existing {
        // `force` would make meshcheck the manager of every field it sends, and the
        // cleanup of a run would not delete it (not created), but the object would
        // still be changed: only objects an earlier meshcheck run applied (kept) are
        // applied again without `--adopt`.
        if object.kind == "Namespace"
            && super::injection::keep_live_revision(
                &mut prepared.body,
                meta.metadata.labels.as_ref(),
            )
        {
            tracing::info!(
                "{source}: {describe} is labelled istio.io/rev: istio-injection not added"
            );
        }
        let managers = managers(&meta.metadata);
        if !opts.adopt && !managers.iter().any(|m| m == &opts.field_manager) {
            return Err(KubeError::NotOurs {
                object: describe,
                source: source.clone(),
                managers,
            });
        }
    }
    let params = PatchParams::apply(&opts.field_manager).force();
    api.patch(&prepared.name, &params, &Patch::Apply(&prepared.body))
        .await
        .map_err(|e| KubeError::from_kube(e, "apply", &describe, Some(source)))?;
    tracing::debug!(
        "{source}: applied {describe} ({})",
        if existed { "configured" } else { "created" }
    );
    Ok(Applied {
        kind: object.kind.clone(),
        namespace: prepared.namespace,
        name: prepared.name,
        api_resource: resource,
        created: !existed,
    })
}

/// The field managers of an object (`metadata.managedFields[].manager`), each once.
fn managers(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in meta.managed_fields.iter().flatten() {
        if let Some(name) = &m.manager {
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
    }
    out
}

/// The pod template labels of a workload (or a Pod's labels), as written.
pub(super) fn pod_labels_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some("/spec/template/metadata/labels")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/template/metadata/labels"),
        "Pod" => Some("/metadata/labels"),
        _ => None,
    }
}

/// Where a workload's label selector (`matchLabels`) is.
fn workload_selector_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some("/spec/selector/matchLabels")
        }
        "CronJob" => Some("/spec/jobTemplate/spec/selector/matchLabels"),
        _ => None,
    }
}

fn is_istio_gateway(o: &Object) -> bool {
    o.kind == "Gateway" && o.api_version.starts_with("networking.istio.io/")
}

fn string_map(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a workload of `objects` runs the image `from` (see [`image_matches`]) in a
/// container or init container: the first such object.
pub fn first_using_image<'a>(objects: &'a [Object], from: &str) -> Option<&'a Object> {
    objects.iter().find(|o| {
        let spec = match o.kind.as_str() {
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                o.raw.pointer("/spec/template/spec")
            }
            "CronJob" => o.raw.pointer("/spec/jobTemplate/spec/template/spec"),
            "Pod" => o.raw.pointer("/spec"),
            _ => None,
        };
        let Some(spec) = spec else { return false };
        ["containers", "initContainers"].iter().any(|list| {
            spec.get(*list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("image").and_then(Value::as_str))
                .any(|i| image_matches(i, from))
        })
    })
}

/// What a namespace prefix isolates besides namespaces, so that a run on a shared
/// cluster neither collides with nor captures what runs there:
///
/// - fixed `nodePort`s of Services are dropped: the API server allocates free ones
///   (the live NodePorts are read back), instead of refusing a port in use (422);
/// - the labels by which the fixtures' Istio Gateways select the fixtures' own
///   gateway pods get values unique to the run (`istio: my-ingress-gateway` ->
///   `istio: mc-my-ingress-gateway`) in the Gateways' `spec.selector`, the workloads'
///   pod labels and `matchLabels`, and the Services' selectors. Otherwise the run's
///   Gateway would program the cluster's own gateway pods that carry the same labels
///   (a Gateway selects pods in every namespace), and the cluster's Gateways the
///   run's gateway pods.
///
/// A Gateway selector that selects no workload of the fixtures (a gateway the
/// cluster provides) is left alone.
#[derive(Debug, Clone)]
pub struct Isolation {
    prefix: String,
    labels: BTreeSet<(String, String)>,
}

impl Isolation {
    pub fn new(prefix: &str, objects: &[Object]) -> Self {
        let templates: Vec<Vec<(String, String)>> = objects
            .iter()
            .filter_map(|o| pod_labels_pointer(&o.kind).map(|p| string_map(o.raw.pointer(p))))
            .collect();
        let mut labels = BTreeSet::new();
        for g in objects.iter().filter(|o| is_istio_gateway(o)) {
            let selector = string_map(g.raw.pointer("/spec/selector"));
            if selector.is_empty() {
                continue;
            }
            let selects_own = templates
                .iter()
                .any(|t| selector.iter().all(|pair| t.contains(pair)));
            if selects_own {
                labels.extend(selector);
            }
        }
        Isolation {
            prefix: prefix.to_string(),
            labels,
        }
    }

    /// The label pairs made unique to the run (before renaming).
    pub fn labels(&self) -> &BTreeSet<(String, String)> {
        &self.labels
    }

    /// The value label `key` has on the cluster when the fixtures give it `value`.
    pub fn label_value(&self, key: &str, value: &str) -> String {
        if self.labels.contains(&(key.to_string(), value.to_string())) {
            format!("{}{value}", self.prefix)
        } else {
            value.to_string()
        }
    }

    /// [`Isolation::label_value`] over a label map.
    pub fn rename_labels(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> std::collections::BTreeMap<String, String> {
        labels
            .iter()
            .map(|(k, v)| (k.clone(), self.label_value(k, v)))
            .collect()
    }

    fn rewrite_map(&self, map: Option<&mut Value>) {
        let Some(map) = map.and_then(Value::as_object_mut) else {
            return;
        };
        for (k, v) in map.iter_mut() {
            if let Value::String(s) = v {
                *s = self.label_value(k, s);
            }
        }
    }

    /// Rewrites the body of `object` (already prepared for sending).
    pub fn apply(&self, object: &Object, body: &mut Value) {
        if object.kind == "Service" && object.api_version == "v1" {
            if let Some(ports) = body
                .pointer_mut("/spec/ports")
                .and_then(Value::as_array_mut)
            {
                for p in ports {
                    if let Some(p) = p.as_object_mut() {
                        p.remove("nodePort");
                    }
                }
            }
            self.rewrite_map(body.pointer_mut("/spec/selector"));
            return;
        }
        if is_istio_gateway(object) {
            self.rewrite_map(body.pointer_mut("/spec/selector"));
            return;
        }
        if let Some(p) = pod_labels_pointer(&object.kind) {
            self.rewrite_map(body.pointer_mut(p));
        }
        if let Some(p) = workload_selector_pointer(&object.kind) {
            self.rewrite_map(body.pointer_mut(p));
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn obj(kind: &str, api_version: &str, ns: &str, name: &str) -> Object {
        Object {
            kind: kind.into(),
            api_version: api_version.into(),
            namespace: ns.into(),
            name: name.into(),
            source: Source {
                file: PathBuf::from("f.yaml"),
                line: 1,
            },
            raw: json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}),
        }
    }

    #[test]
    fn order_puts_namespaces_first_and_virtualservices_last() {
        let objects = vec![
            obj("VirtualService", "networking.istio.io/v1", "atlas", "vs"),
            obj("Gateway", "networking.istio.io/v1", "atlas", "gw"),
            obj("Deployment", "apps/v1", "atlas", "d"),
            obj("DestinationRule", "networking.istio.io/v1", "atlas", "dr"),
            obj("Service", "v1", "atlas", "svc"),
            obj("Namespace", "v1", "", "atlas"),
            obj("ServiceAccount", "v1", "atlas", "sa"),
            obj("PeerAuthentication", "security.istio.io/v1", "atlas", "pa"),
        ];
        let names: Vec<&str> = apply_order(&objects)
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(names, ["atlas", "svc", "sa", "d", "pa", "dr", "gw", "vs"]);
    }

    #[test]
    fn gateway_api_addresses_and_namespace_name_selectors_get_the_prefix() {
        let objects = vec![
            obj("Namespace", "v1", "", "atlas"),
            obj("Namespace", "v1", "", "istio-ingress"),
        ];
        let r = NamespaceRenamer::new("t1-", &objects);
        let mut gw = obj(
            "Gateway",
            "gateway.networking.k8s.io/v1",
            "istio-ingress",
            "gw",
        );
        gw.raw = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "istio-ingress"},
            "spec": {"gatewayClassName": "istio",
                "addresses": [{"type": "Hostname", "value": "my-gw.istio-ingress.svc.cluster.local"},
                              {"type": "IPAddress", "value": "10.0.0.1"}],
                "listeners": [{"name": "http", "port": 80, "protocol": "HTTP",
                    "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "atlas"},
                        "matchExpressions": [
                            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["atlas", "other"]},
                            {"key": "team", "operator": "In", "values": ["atlas"]}]}}}}]}});
        let mut body = gw.raw.clone();
        r.rewrite_references(&gw, &mut body);
        assert_eq!(
            body["spec"]["addresses"][0]["value"],
            "my-gw.t1-istio-ingress.svc.cluster.local"
        );
        assert_eq!(body["spec"]["addresses"][1]["value"], "10.0.0.1");
        let sel = &body["spec"]["listeners"][0]["allowedRoutes"]["namespaces"]["selector"];
        assert_eq!(
            sel["matchLabels"]["kubernetes.io/metadata.name"],
            "t1-atlas"
        );
        assert_eq!(
            sel["matchExpressions"][0]["values"],
            json!(["t1-atlas", "other"])
        );
        // Another label keeps its values.
        assert_eq!(sel["matchExpressions"][1]["values"], json!(["atlas"]));
        // An HTTPRoute header match `value` is not a host.
        let mut route = obj("HTTPRoute", "gateway.networking.k8s.io/v1", "atlas", "r");
        route.raw = json!({"spec": {"rules": [{"matches": [{"headers": [
            {"name": "x", "value": "a.atlas.svc.cluster.local"}]}]}]}});
        let mut body = route.raw.clone();
        r.rewrite_references(&route, &mut body);
        assert_eq!(
            body["spec"]["rules"][0]["matches"][0]["headers"][0]["value"],
            "a.atlas.svc.cluster.local"
        );
    }

    #[test]
    fn image_matching() {
        assert!(image_matches("meshcheck/stub", "meshcheck/stub"));
        assert!(image_matches("meshcheck/stub:latest", "meshcheck/stub"));
        assert!(image_matches("meshcheck/stub@sha256:abc", "meshcheck/stub"));
        assert!(!image_matches("meshcheck/stubby:1", "meshcheck/stub"));
        assert!(!image_matches(
            "docker.io/istio/proxyv2:1.26.0",
            "meshcheck/stub"
        ));
        assert!(image_matches("meshcheck/stub:dev", "meshcheck/stub:"));
        assert!(!image_matches("anything", ""));
    }

    #[test]
    fn renames_hosts_gateways_and_principals() {
        let objects = vec![
            obj("Namespace", "v1", "", "atlas"),
            obj("Gateway", "networking.istio.io/v1", "istio-ingress", "gw"),
        ];
        let r = NamespaceRenamer::new("t1-", &objects);
        assert_eq!(r.rename("atlas"), "t1-atlas");
        assert_eq!(r.rename("istio-system"), "istio-system");
        assert_eq!(
            r.rename_host("nb-rest.atlas.svc.cluster.local"),
            "nb-rest.t1-atlas.svc.cluster.local"
        );
        assert_eq!(r.rename_host("nb-rest.atlas.svc"), "nb-rest.t1-atlas.svc");
        assert_eq!(r.rename_host("nb-rest"), "nb-rest");
        assert_eq!(r.rename_host("*.example.com"), "*.example.com");
        assert_eq!(r.rename_host("atlas/*"), "t1-atlas/*");
        assert_eq!(r.rename_host("./*.example.com"), "./*.example.com");
        assert_eq!(
            r.rename_host("istio-system/x.atlas.svc.cluster.local"),
            "istio-system/x.t1-atlas.svc.cluster.local"
        );
        assert_eq!(
            r.rename_gateway_ref("istio-ingress/gw"),
            "t1-istio-ingress/gw"
        );
        assert_eq!(r.rename_gateway_ref("mesh"), "mesh");
        assert_eq!(
            r.rename_principal("cluster.local/ns/atlas/sa/atlas-ui"),
            "cluster.local/ns/t1-atlas/sa/atlas-ui"
        );
    }
}

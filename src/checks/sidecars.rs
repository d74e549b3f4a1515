//! `sidecars`: every pod of the app namespaces carries a running `istio-proxy` (a
//! regular container, or a native sidecar: an init container with
//! `restartPolicy: Always`) that Istio's injector added (its
//! `sidecar.istio.io/status` annotation records it), and the sidecars are in the path: each backend reached
//! through the ingress saw an `X-Forwarded-Client-Cert` whose URI is the gateway's
//! SPIFFE identity (only a sidecar terminating Istio mTLS from the gateway adds it).

use super::{send, Ctx, Outcome};
use crate::istio::SidecarShape;
use crate::stub::Echo;
use crate::suite::{RequestSpec, SidecarsCheck};
use crate::targets::PodInfo;
use std::collections::BTreeSet;
use std::time::Instant;

/// How `pod` carries Istio's proxy, if it does.
pub fn sidecar_shape(pod: &PodInfo) -> Option<SidecarShape> {
    if pod.containers.iter().any(|c| c.name == "istio-proxy") {
        return Some(SidecarShape::Classic);
    }
    pod.init_containers
        .iter()
        .any(|c| c.name == "istio-proxy" && c.restart_policy.as_deref() == Some("Always"))
        .then_some(SidecarShape::Native)
}

/// What Istio's injector recorded in `sidecar.istio.io/status`: the init containers
/// and containers it added, and the revision.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InjectionStatus {
    pub init_containers: Vec<String>,
    pub containers: Vec<String>,
    pub revision: String,
}

pub fn injection_status(pod: &PodInfo) -> Option<InjectionStatus> {
    let raw = pod.annotations.get("sidecar.istio.io/status")?;
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    let names = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(|x| x.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(InjectionStatus {
        init_containers: names("initContainers"),
        containers: names("containers"),
        revision: v
            .get("revision")
            .and_then(|r| r.as_str())
            .unwrap_or("")
            .to_string(),
    })
}

/// Whether Istio's injector recorded the proxy of `shape` in the pod's
/// `sidecar.istio.io/status` (`containers` for a classic sidecar, `initContainers`
/// for a native one): a container merely named `istio-proxy` is not an injection.
pub fn injected_by_istio(pod: &PodInfo, shape: SidecarShape) -> Result<(), String> {
    let Some(status) = injection_status(pod) else {
        return Err(if pod.annotations.contains_key("sidecar.istio.io/status") {
            "has a container named istio-proxy, but its sidecar.istio.io/status annotation is not what Istio's injector writes".to_string()
        } else {
            "has a container named istio-proxy, but no sidecar.istio.io/status annotation: Istio's injector did not add it".to_string()
        });
    };
    let recorded = match shape {
        SidecarShape::Classic => &status.containers,
        SidecarShape::Native => &status.init_containers,
    };
    if recorded.iter().any(|c| c == "istio-proxy") {
        Ok(())
    } else {
        Err(format!(
            "has an istio-proxy {}, but sidecar.istio.io/status does not record it there (containers {:?}, initContainers {:?})",
            match shape {
                SidecarShape::Classic => "container",
                SidecarShape::Native => "native sidecar",
            },
            status.containers,
            status.init_containers
        ))
    }
}

fn proxy_running(pod: &PodInfo) -> bool {
    pod.containers
        .iter()
        .chain(pod.init_containers.iter())
        .any(|c| c.name == "istio-proxy" && c.running)
}

/// The URI fields of each element of an XFCC header, in order (the last element is
/// the one the nearest proxy added). Values may be quoted; `,` and `;` inside quotes
/// do not split.
pub fn xfcc_uris(header: &str) -> Vec<Vec<String>> {
    let mut elements = vec![Vec::new()];
    let mut field = String::new();
    let mut quoted = false;
    let flush = |field: &mut String, elements: &mut Vec<Vec<String>>| {
        if let Some((k, v)) = field.split_once('=') {
            if k.trim().eq_ignore_ascii_case("URI") {
                if let Some(last) = elements.last_mut() {
                    last.push(v.trim().trim_matches('"').to_string());
                }
            }
        }
        field.clear();
    };
    for c in header.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                field.push(c);
            }
            ';' if !quoted => flush(&mut field, &mut elements),
            ',' if !quoted => {
                flush(&mut field, &mut elements);
                elements.push(Vec::new());
            }
            _ => field.push(c),
        }
    }
    flush(&mut field, &mut elements);
    elements
}

pub async fn run(ctx: &Ctx, check: &SidecarsCheck) -> Outcome {
    let mut report = Report::default();
    if !check.namespaces.is_empty() {
        let pods = match app_pods(ctx, &check.namespaces).await {
            Ok(pods) => pods,
            Err(e) => return Outcome::fail(e, ""),
        };
        report.judge_pods(&pods, &check.namespaces);
    }
    if !check.via.is_empty() {
        check_gateway_mtls(ctx, &check.via, &mut report).await;
    }
    if !check.plaintext_refused.is_empty() {
        match app_pods(ctx, &check.plaintext_refused).await {
            Ok(pods) => {
                let found = super::plaintext::refused_by_every_pod(ctx, &pods).await;
                report.problems.extend(found.problems);
                report.detail.push_str(&found.detail);
                report.summary.extend(found.summary);
                report.attempts += found.attempts;
            }
            Err(e) => report.problems.push(e),
        }
    }
    report.outcome()
}

/// What the check found so far: its problems, detail lines and summary of what
/// passed, with the last request's transcript and the number of requests sent.
#[derive(Default)]
struct Report {
    problems: Vec<String>,
    detail: String,
    summary: Vec<String>,
    transcript: String,
    attempts: u32,
}

impl Report {
    /// Records each pod's sidecar, or why it has none that counts, and the summary
    /// when every pod has one.
    fn judge_pods(&mut self, pods: &[PodInfo], namespaces: &[String]) {
        if pods.is_empty() {
            self.problems
                .push(format!("no pods in namespace(s) {}", namespaces.join(", ")));
        }
        for p in pods {
            match pod_sidecar(p) {
                Ok(shape) => self.detail.push_str(&format!(
                    "{}/{}: istio-proxy ({shape:?})\n",
                    p.namespace, p.name
                )),
                Err(why) => self
                    .problems
                    .push(format!("pod {}/{} {why}", p.namespace, p.name)),
            }
        }
        if self.problems.is_empty() {
            self.summary
                .push(format!("{} pod(s) with a running istio-proxy", pods.len()));
        }
    }

    /// Records what the `via` requests showed overall: those that reached no backend,
    /// and the mTLS summary, or a failure when none reached a backend and nothing
    /// else failed.
    fn sum_up_mtls(
        &mut self,
        ctx: &Ctx,
        ids: &[String],
        verified: BTreeSet<String>,
        unreached: &[String],
    ) {
        if !unreached.is_empty() {
            self.detail.push_str(&format!(
                "not verified (no backend answered within {:?}): {}\n",
                ctx.budget,
                unreached.join("; ")
            ));
        }
        if verified.is_empty() && self.problems.is_empty() {
            self.problems.push(ctx.with_health(format!(
                "no request reached a backend, so no sidecar could be seen in the path: {}",
                unreached.join("; ")
            )));
        }
        if !verified.is_empty() {
            self.summary.push(format!(
                "mTLS from {} seen at {}",
                ids.join(", "),
                verified.into_iter().collect::<Vec<_>>().join(", ")
            ));
            if !unreached.is_empty() {
                self.summary
                    .push(format!("not verified: {}", unreached.join("; ")));
            }
        }
    }

    /// The check's outcome: passed with the summary when there is no problem, else
    /// failed with every problem.
    fn outcome(self) -> Outcome {
        let passed = self.problems.is_empty();
        Outcome {
            passed,
            message: if passed {
                self.summary.join("; ")
            } else {
                self.problems.join("; ")
            },
            detail: self.detail,
            transcript: self.transcript,
            attempts: self.attempts.max(1),
            flaky: false,
        }
    }
}

/// The pods of `namespaces`.
async fn app_pods(ctx: &Ctx, namespaces: &[String]) -> Result<Vec<PodInfo>, String> {
    match ctx.target.pods().await {
        Ok(all) => Ok(all
            .into_iter()
            .filter(|p| namespaces.contains(&p.namespace))
            .collect()),
        Err(e) => Err(format!("cannot list pods: {e}")),
    }
}

/// The shape of `pod`'s istio-proxy if Istio's injector added it and it is running,
/// else why the pod has no sidecar that counts.
fn pod_sidecar(pod: &PodInfo) -> Result<SidecarShape, String> {
    match sidecar_shape(pod) {
        None => Err("has no istio-proxy sidecar".to_string()),
        Some(shape) => injected_by_istio(pod, shape).and_then(|()| {
            if proxy_running(pod) {
                Ok(shape)
            } else {
                Err("has an istio-proxy that is not running".to_string())
            }
        }),
    }
}

/// Sends each `via` request through the ingress and records whether the backend it
/// reached saw the gateway's identity in its X-Forwarded-Client-Cert.
async fn check_gateway_mtls(ctx: &Ctx, via: &[RequestSpec], report: &mut Report) {
    let ids = ctx.target.gateway_identities();
    if ids.is_empty() {
        report
            .problems
            .push("the target has no gateway identity to expect".into());
    }
    let mut verified = BTreeSet::new();
    let mut unreached = Vec::new();
    for req in via {
        match send_until_backend(ctx, req, report).await {
            Reach::Backend(echo) => match gateway_mtls_seen(req, &echo, &ids) {
                Ok((who, line)) => {
                    report.detail.push_str(&line);
                    verified.insert(who);
                }
                Err(problem) => report.problems.push(problem),
            },
            // Not a failure by itself: routing checks own reachability.
            // A backend that answers without mTLS is the failure here.
            Reach::Unreached(last) => unreached.push(format!("{} ({last})", req.path)),
            Reach::NoClient(e) => report.problems.push(e),
        }
    }
    report.sum_up_mtls(ctx, &ids, verified, &unreached);
}

/// How a `via` request ended.
enum Reach {
    /// A backend answered 2xx, echoing what it received.
    Backend(Box<Echo>),
    /// No backend answered within the budget; the summary of the last answer.
    Unreached(String),
    /// The request could not be sent (no NodePort, no client).
    NoClient(String),
}

/// Sends `req` until a backend answers 2xx or the budget runs out, counting each
/// attempt and keeping the last transcript in `report`.
async fn send_until_backend(ctx: &Ctx, req: &RequestSpec, report: &mut Report) -> Reach {
    let deadline = Instant::now() + ctx.budget;
    loop {
        report.attempts += 1;
        let x = match ctx
            .ingress_for(req)
            .and_then(|a| Ok((a, ctx.client_for(req, a, false)?)))
        {
            Ok((a, client)) => send(&client, a, req).await,
            Err(e) => return Reach::NoClient(e),
        };
        report.transcript = x.transcript.clone();
        let ok_status = x.status.map(|s| (200..300).contains(&s)).unwrap_or(false);
        match x.echo {
            Some(echo) if ok_status => return Reach::Backend(Box::new(echo)),
            _ if Instant::now() >= deadline => return Reach::Unreached(x.summary()),
            _ => tokio::time::sleep(ctx.timeouts.failure_pause).await,
        }
    }
}

/// Whether the nearest XFCC element `echo` received carries one of the gateway
/// identities `ids`: the backend and its detail line, or the problem.
fn gateway_mtls_seen(
    req: &RequestSpec,
    echo: &Echo,
    ids: &[String],
) -> Result<(String, String), String> {
    let who = format!(
        "{}/{} {}",
        echo.identity.namespace, echo.identity.service, echo.identity.version
    );
    let xfcc = echo.header("x-forwarded-client-cert");
    let uris = xfcc.map(xfcc_uris).unwrap_or_default();
    let nearest = uris.last().cloned().unwrap_or_default();
    if nearest.iter().any(|u| ids.contains(u)) {
        let line = format!("{} -> {who}: XFCC URI {}\n", req.path, nearest.join(","));
        Ok((who, line))
    } else {
        Err(format!(
            "{} reached {who} without Istio mTLS from the gateway: X-Forwarded-Client-Cert {} (expected URI {})",
            req.path,
            xfcc.map(|h| format!("{h:?}")).unwrap_or_else(|| "absent".into()),
            ids.join(" or ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::ContainerInfo;

    fn c(name: &str, restart: Option<&str>) -> ContainerInfo {
        ContainerInfo {
            name: name.into(),
            image: "x".into(),
            restart_policy: restart.map(str::to_string),
            running: true,
        }
    }

    fn pod(containers: Vec<ContainerInfo>, inits: Vec<ContainerInfo>) -> PodInfo {
        PodInfo {
            namespace: "atlas".into(),
            name: "p".into(),
            labels: Default::default(),
            annotations: Default::default(),
            containers,
            init_containers: inits,
            ip: None,
            ports: Vec::new(),
        }
    }

    #[test]
    fn detects_both_sidecar_shapes() {
        assert_eq!(
            sidecar_shape(&pod(
                vec![c("app", None), c("istio-proxy", None)],
                vec![c("istio-init", None)]
            )),
            Some(SidecarShape::Classic)
        );
        assert_eq!(
            sidecar_shape(&pod(
                vec![c("app", None)],
                vec![c("istio-init", None), c("istio-proxy", Some("Always"))]
            )),
            Some(SidecarShape::Native)
        );
        // An istio-proxy init container that does not keep running is not a sidecar.
        assert_eq!(
            sidecar_shape(&pod(vec![c("app", None)], vec![c("istio-proxy", None)])),
            None
        );
        assert_eq!(sidecar_shape(&pod(vec![c("app", None)], vec![])), None);
    }

    const CLASSIC_STATUS: &str = r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"imagePullSecrets":null,"revision":"default"}"#;
    const NATIVE_STATUS: &str = r#"{"initContainers":["istio-init","istio-proxy"],"containers":null,"volumes":["istio-envoy"],"imagePullSecrets":null,"revision":"default"}"#;

    fn annotated(mut p: PodInfo, status: &str) -> PodInfo {
        p.annotations
            .insert("sidecar.istio.io/status".into(), status.into());
        p
    }

    #[test]
    fn only_a_proxy_recorded_by_the_injector_counts() {
        let classic = pod(vec![c("app", None), c("istio-proxy", None)], vec![]);
        let native = pod(
            vec![c("app", None)],
            vec![c("istio-init", None), c("istio-proxy", Some("Always"))],
        );
        // Injected by Istio: the annotation records the proxy where it is.
        assert_eq!(
            injected_by_istio(
                &annotated(classic.clone(), CLASSIC_STATUS),
                SidecarShape::Classic
            ),
            Ok(())
        );
        assert_eq!(
            injected_by_istio(
                &annotated(native.clone(), NATIVE_STATUS),
                SidecarShape::Native
            ),
            Ok(())
        );
        // A container named istio-proxy added by hand: no annotation.
        let why = injected_by_istio(&classic, SidecarShape::Classic).unwrap_err();
        assert!(why.contains("no sidecar.istio.io/status"), "{why}");
        // An annotation that records the proxy elsewhere, or is not JSON.
        let why = injected_by_istio(
            &annotated(classic.clone(), NATIVE_STATUS),
            SidecarShape::Classic,
        )
        .unwrap_err();
        assert!(why.contains("does not record it"), "{why}");
        let why =
            injected_by_istio(&annotated(classic, "not json"), SidecarShape::Classic).unwrap_err();
        assert!(why.contains("not what Istio's injector writes"), "{why}");
    }

    /// The check as a whole: an injected pod passes; a pod whose istio-proxy was
    /// added by hand fails, by name.
    #[tokio::test]
    async fn a_hand_added_istio_proxy_fails_the_check() {
        let mut injected = annotated(
            pod(vec![c("app", None), c("istio-proxy", None)], vec![]),
            CLASSIC_STATUS,
        );
        injected.name = "atlas-ui-7d9f8b6c5-x2x7q".into();
        let mut by_hand = pod(vec![c("app", None), c("istio-proxy", None)], vec![]);
        by_hand.name = "authz-6b7c8d9e0f-abcde".into();
        let run_on = |pods: Vec<PodInfo>| async move {
            let target = crate::targets::testing::FixedTarget {
                pods,
                ..crate::targets::testing::FixedTarget::new()
            };
            let ctx = Ctx::new(
                std::sync::Arc::new(target),
                crate::timeouts::Timeouts::default(),
                80,
            );
            let check = SidecarsCheck {
                namespaces: vec!["atlas".into()],
                via: Vec::new(),
                plaintext_refused: Vec::new(),
            };
            run(&ctx, &check).await
        };
        let o = run_on(vec![injected.clone()]).await;
        assert!(o.passed, "{}", o.message);
        let o = run_on(vec![injected, by_hand]).await;
        assert!(!o.passed);
        assert!(
            o.message.starts_with("pod atlas/authz-6b7c8d9e0f-abcde has a container named istio-proxy, but no sidecar.istio.io/status annotation"),
            "{}",
            o.message
        );
    }

    #[test]
    fn parses_xfcc_like_envoy_writes_it() {
        let h = r#"By=spiffe://cluster.local/ns/atlas/sa/authz;Hash=abc;Subject="";URI=spiffe://cluster.local/ns/istio-ingress/sa/my-ingress-gateway"#;
        assert_eq!(
            xfcc_uris(h),
            vec![vec![
                "spiffe://cluster.local/ns/istio-ingress/sa/my-ingress-gateway".to_string()
            ]]
        );
        let two = r#"By=a;URI=spiffe://x,By=b;Subject="CN=a,O=b";URI=spiffe://y"#;
        assert_eq!(
            xfcc_uris(two),
            vec![
                vec!["spiffe://x".to_string()],
                vec!["spiffe://y".to_string()]
            ]
        );
        assert_eq!(xfcc_uris(""), vec![Vec::<String>::new()]);
    }
}

//! `sidecars.plaintext_refused`: a client outside the mesh sends plaintext HTTP
//! straight to each pod's address and declared ports, bypassing the gateway; no pod
//! may answer (PeerAuthentication STRICT behind the gateway). Istio applies a policy
//! change eventually, so a pod that still answers is asked again until the budget
//! runs out; a pod that cannot be reached at all proves nothing and fails the check
//! with why.

use super::Ctx;
use crate::targets::plaintext::PlaintextAnswer;
use crate::targets::PodInfo;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a pod may hold a plaintext connection open without answering; past it,
/// nothing answered (a refusal).
const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// What the plaintext requests found, for the sidecars check's report.
#[derive(Debug, Default)]
pub struct Found {
    pub problems: Vec<String>,
    pub detail: String,
    pub summary: Vec<String>,
    pub attempts: u32,
}

/// One pod port to send plaintext to.
struct Door {
    pod: String,
    addr: SocketAddr,
    last: PlaintextAnswer,
}

/// Sends plaintext to every declared port of every pod of `pods` until each refuses
/// it (or the budget is spent): a pod that answers, or cannot be reached, is a
/// problem; so is a pod with no address or no declared port (nothing could be asked).
pub async fn refused_by_every_pod(ctx: &Ctx, pods: &[PodInfo]) -> Found {
    let mut found = Found::default();
    let mut pending = doors(pods, &mut found.problems);
    if pods.is_empty() {
        found.problems.push("no pods to send plaintext to".into());
    }
    let total = pending.len();
    let deadline = Instant::now() + ctx.budget;
    loop {
        let mut still = Vec::new();
        for mut door in pending {
            found.attempts += 1;
            door.last = ctx
                .target
                .plaintext_to_pod(door.addr, ctx.timeouts.connect, ANSWER_WAIT)
                .await;
            match &door.last {
                PlaintextAnswer::Refused(how) => found.detail.push_str(&format!(
                    "{} ({}): plaintext refused: {how}\n",
                    door.pod, door.addr
                )),
                _ => still.push(door),
            }
        }
        pending = still;
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(ctx.timeouts.failure_pause).await;
    }
    for door in &pending {
        if let Some(problem) = problem_of(door) {
            found.problems.push(problem);
        }
    }
    if found.problems.is_empty() {
        found.summary.push(format!(
            "plaintext refused by {total} pod port(s) of {} pod(s)",
            pods.len()
        ));
    }
    found
}

/// Why a door still open at the deadline fails the check (None: it refused).
fn problem_of(door: &Door) -> Option<String> {
    match &door.last {
        PlaintextAnswer::Answered(status) => Some(format!(
            "pod {} answered plaintext sent straight to {} (`{status}`): it takes traffic without Istio mTLS, so PeerAuthentication STRICT is not in force there",
            door.pod, door.addr
        )),
        PlaintextAnswer::Unreachable(why) => Some(format!(
            "pod {} at {} could not be reached from here ({why}), so nothing shows whether it refuses plaintext",
            door.pod, door.addr
        )),
        PlaintextAnswer::Refused(_) => None,
    }
}

/// The pod ports to ask, recording each pod that offers none.
fn doors(pods: &[PodInfo], problems: &mut Vec<String>) -> Vec<Door> {
    let mut out = Vec::new();
    for p in pods {
        let name = format!("{}/{}", p.namespace, p.name);
        let Some(ip) = p.ip else {
            problems.push(format!("pod {name} has no address yet"));
            continue;
        };
        if p.ports.is_empty() {
            problems.push(format!(
                "pod {name} declares no containerPort: nothing to send plaintext to"
            ));
        }
        out.extend(p.ports.iter().map(|port| Door {
            pod: name.clone(),
            addr: SocketAddr::new(ip, *port),
            last: PlaintextAnswer::Unreachable("not asked".into()),
        }));
    }
    out
}

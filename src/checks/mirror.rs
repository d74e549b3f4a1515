//! `mirrored_to`: a request answered by its primary must also have reached the mirror
//! backend. Each request carries a unique `x-meshcheck-id`; the stubs record what they
//! receive and the target reads the records back ([`crate::targets::Target::seen`]).
//! Envoy mirrors asynchronously (the shadow request is not awaited), so the record is
//! waited for, within the check's budget.

use super::{Ctx, Exchange};
use crate::stub::Echo;
use crate::suite::MirrorExpect;
use std::time::{Duration, Instant};

/// The least time given to a mirror's record to appear, even late in the budget.
pub(super) const MIN_WAIT: Duration = Duration::from_secs(1);
/// Pause between two readings of the records: doubled each time up to
/// [`POLL_MAX`] (a cluster target reads pod logs through the API server).
const POLL: Duration = Duration::from_millis(25);
const POLL_MAX: Duration = Duration::from_millis(500);

/// A request id no other request of this run carries.
pub fn new_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("mc-{:016x}-{n}", fastrand::u64(..))
}

/// `nb-rest v2 (pod atlas/nb-rest-v2-…)` for each record.
fn who(records: &[Echo]) -> String {
    if records.is_empty() {
        return "no backend".into();
    }
    records
        .iter()
        .map(|e| {
            format!(
                "{} {} (pod {}/{})",
                e.identity.service, e.identity.version, e.identity.namespace, e.identity.pod
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why the records of request `id` do not show it mirrored to `want`, or None when
/// they do. `needed`: records `want` must hold (2 when the primary is `want` too).
/// The mirror sees the Host the primary saw: istiod 1.30.3 sets
/// `disable_shadow_host_suffix_append` (pilot features.DisableShadowHostSuffix,
/// default true; route.go TranslateRequestMirrorPolicy), so Envoy adds no `-shadow`.
pub fn judge(
    want: &MirrorExpect,
    id: &str,
    primary: &Echo,
    records: &[Echo],
) -> Result<(), String> {
    let needed = 1 + usize::from(want.is(&primary.identity));
    let at: Vec<&Echo> = records.iter().filter(|e| want.is(&e.identity)).collect();
    if at.len() < needed {
        return Err(format!(
            "expected request {id} mirrored to {want}, it reached only {}",
            who(records)
        ));
    }
    if let Some(m) = at.iter().find(|m| m.host != primary.host) {
        return Err(format!(
            "the mirror {want} saw Host {:?}, the primary {:?} (istiod appends no -shadow: disable_shadow_host_suffix_append)",
            m.host, primary.host
        ));
    }
    if let Some(m) = at
        .iter()
        .find(|m| m.path != primary.path || m.method != primary.method)
    {
        return Err(format!(
            "the mirror {want} saw {} {}, the primary {} {}",
            m.method, m.path, primary.method, primary.path
        ));
    }
    Ok(())
}

/// Waits (until `deadline`, at least [`MIN_WAIT`]) for request `id` to show up at
/// `want`; None when it did, else why not.
pub async fn mismatch(
    ctx: &Ctx,
    want: &MirrorExpect,
    id: &str,
    primary: &Exchange,
    deadline: Instant,
) -> Option<String> {
    let Some(echo) = &primary.echo else {
        return Some(format!(
            "expected an answer from a backend, got {}",
            primary.summary()
        ));
    };
    let started = Instant::now();
    let deadline = deadline.max(started + MIN_WAIT);
    let mut pause = POLL;
    loop {
        let verdict = match ctx.target.seen(id).await {
            Err(e) => return Some(format!("cannot read what the backends received: {e}")),
            Ok(records) => judge(want, id, echo, &records),
        };
        match verdict {
            Ok(()) => return None,
            Err(why) if Instant::now() >= deadline => {
                return Some(format!(
                    "{why} (waited {:.1?} for the mirror)",
                    started.elapsed()
                ))
            }
            Err(_) => {
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                pause = (pause * 2).min(POLL_MAX);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stub::Identity;

    fn at(service: &str, version: &str, host: &str) -> Echo {
        Echo {
            identity: Identity {
                service: service.into(),
                version: version.into(),
                pod: format!("{service}-{version}-0"),
                namespace: "atlas".into(),
            },
            method: "GET".into(),
            path: "/authz".into(),
            host: host.into(),
            ..Default::default()
        }
    }

    fn want(service: &str, version: &str) -> MirrorExpect {
        MirrorExpect {
            service: service.into(),
            version: Some(version.into()),
            namespace: None,
        }
    }

    #[test]
    fn the_mirror_must_hold_the_request_with_the_primary_host() {
        let primary = at("authz", "v1", "h");
        let w = want("nb-rest", "v2");
        assert!(judge(
            &w,
            "i",
            &primary,
            &[primary.clone(), at("nb-rest", "v2", "h")]
        )
        .is_ok());
        let e = judge(&w, "i", &primary, std::slice::from_ref(&primary)).unwrap_err();
        assert!(
            e.contains("mirrored to nb-rest v2, it reached only authz v1"),
            "{e}"
        );
        let e = judge(
            &w,
            "i",
            &primary,
            &[primary.clone(), at("nb-rest", "v1", "h")],
        )
        .unwrap_err();
        assert!(e.contains("reached only"), "{e}");
        let e = judge(&w, "i", &primary, &[at("nb-rest", "v2", "h-shadow")]).unwrap_err();
        assert!(e.contains("-shadow"), "{e}");
    }

    #[test]
    fn a_mirror_to_the_primary_backend_needs_a_second_record() {
        let primary = at("authz", "v1", "h");
        let w = want("authz", "v1");
        assert!(judge(&w, "i", &primary, std::slice::from_ref(&primary)).is_err());
        assert!(judge(&w, "i", &primary, &[primary.clone(), primary.clone()]).is_ok());
    }

    #[tokio::test]
    async fn the_record_is_read_through_the_target() {
        let mut t = crate::targets::testing::FixedTarget::new();
        let mut mirrored = at("nb-rest", "v2", "h");
        mirrored
            .headers
            .insert(crate::stub::ID_HEADER.into(), vec!["id-1".into()]);
        t.seen = vec![mirrored];
        let ctx = Ctx::new(std::sync::Arc::new(t), Default::default(), 80);
        let primary = Exchange {
            status: Some(200),
            headers: Vec::new(),
            echo: Some(at("authz", "v1", "h")),
            body: String::new(),
            error: None,
            transcript: String::new(),
            elapsed: Duration::ZERO,
        };
        let w = want("nb-rest", "v2");
        assert_eq!(
            mismatch(&ctx, &w, "id-1", &primary, Instant::now()).await,
            None
        );
        let started = Instant::now();
        let m = mismatch(&ctx, &w, "id-2", &primary, Instant::now())
            .await
            .unwrap();
        assert!(
            m.contains("reached only no backend") && started.elapsed() >= MIN_WAIT,
            "{m}"
        );
    }
}

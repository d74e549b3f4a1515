//! Outlier detection as Envoy reaches it over a sequence of requests (a suite's
//! `steps`): each answer a gateway receives from an endpoint counts toward that
//! endpoint's consecutive errors, and an endpoint is ejected when the count reaches the
//! DestinationRule's threshold and the cluster's `maxEjectionPercent` leaves room;
//! the requests after it are balanced over the endpoints left, and when none is left
//! the gateway answers 503 `no healthy upstream` itself.
//!
//! Sources: pilot networking/core/cluster_traffic_policy.go applyOutlierDetection
//! (`consecutive5xxErrors` -> consecutive_5xx enforced at 100%, unset: Envoy's default
//! of 5, 0: off; `consecutiveGatewayErrors` -> consecutive_gateway_failure, enforced
//! only when set above 0; `maxEjectionPercent` only when above 0, else Envoy's 10;
//! healthy_panic_threshold = minHealthPercent, 0 by default: no panic mode); Envoy
//! source/common/upstream/outlier_detection_impl.cc (DetectorHostMonitorImpl::
//! putHttpResponseCode: a 5xx counts toward consecutive 5xx, a 502-504 also toward
//! consecutive gateway errors, anything else resets both; DetectorImpl::ejectHost:
//! eject when `100 * (ejected + 1) / hosts <= max_ejection_percent`, Istio never sets
//! always_eject_one_host; the counters reset on ejection).
//!
//! What is not modelled: time. An ejection lasts `baseEjectionTime` (times the number
//! of ejections) and is lifted at the next `interval` tick; the model assumes the steps
//! of a check take less than that. Which endpoint Envoy's load balancer picks is not
//! predicted either: requests to a group of endpoints are counted round robin.

use super::mesh::{ClusterPlan, Mesh};
use super::policy::OutlierPlan;
use super::simulate::Prediction;
use std::collections::{BTreeMap, BTreeSet};

/// Envoy's OutlierDetection defaults (api/envoy/config/cluster/v3/outlier_detection.proto).
const ENVOY_CONSECUTIVE_5XX: u32 = 5;
const ENVOY_MAX_EJECTION_PERCENT: u32 = 10;

/// The thresholds that eject a host, as Envoy reads the cluster's outlier_detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Consecutive 5xx that eject (None: not enforced).
    pub consecutive_5xx: Option<u32>,
    /// Consecutive 502/503/504 that eject (None: not enforced).
    pub consecutive_gateway: Option<u32>,
    pub max_ejection_percent: u32,
}

impl Thresholds {
    pub fn of(o: &OutlierPlan) -> Thresholds {
        Thresholds {
            consecutive_5xx: match o.consecutive_5xx {
                None => Some(ENVOY_CONSECUTIVE_5XX),
                Some(0) => None,
                Some(n) => Some(n),
            },
            consecutive_gateway: o.consecutive_gateway_failure.filter(|n| *n > 0),
            max_ejection_percent: o
                .max_ejection_percent
                .filter(|p| *p > 0)
                .unwrap_or(ENVOY_MAX_EJECTION_PERCENT)
                .min(100),
        }
    }

    /// Whether an answer with `status` counts as an error toward an ejection.
    pub fn counts(&self, status: u16) -> bool {
        (self.consecutive_5xx.is_some() && (500..600).contains(&status))
            || (self.consecutive_gateway.is_some() && (502..=504).contains(&status))
    }

    /// Whether one more of `hosts` may be ejected while `ejected` are.
    pub fn room_for_one_more(&self, ejected: usize, hosts: usize) -> bool {
        hosts > 0 && 100 * (ejected + 1) <= self.max_ejection_percent as usize * hosts
    }
}

/// One endpoint's counters (DetectorHostMonitorImpl).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counters {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
}

/// One cluster's outlier state.
#[derive(Debug, Clone, Default, PartialEq)]
struct ClusterState {
    counters: BTreeMap<usize, Counters>,
    /// Pod indices ([`Mesh::pods`]) ejected.
    ejected: BTreeSet<usize>,
    /// Round-robin position for attributing requests to a group's endpoints.
    cursor: usize,
}

/// The endpoints ejected so far, per cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ejections {
    clusters: BTreeMap<String, ClusterState>,
}

/// What a cluster's load balancer chooses from, given the ejections.
pub enum Pick<'a> {
    /// These endpoints (the ejected left out, or all of them in panic mode).
    Endpoints(Vec<&'a super::mesh::EndpointPlan>),
    /// Every endpoint is ejected and panic mode is off: 503 no healthy upstream.
    NoHealthy(Vec<usize>),
}

impl Ejections {
    /// The pods of cluster `name` ejected so far.
    pub fn ejected(&self, name: &str) -> BTreeSet<usize> {
        self.clusters
            .get(name)
            .map(|c| c.ejected.clone())
            .unwrap_or_default()
    }

    /// The clusters with an endpoint ejected, and the pods ejected.
    pub fn ejected_clusters(&self) -> impl Iterator<Item = (&str, &BTreeSet<usize>)> {
        self.clusters
            .iter()
            .filter(|(_, c)| !c.ejected.is_empty())
            .map(|(n, c)| (n.as_str(), &c.ejected))
    }

    /// The endpoints of `c` Envoy balances over: the healthy ones, or every one when
    /// the healthy share is below the panic threshold (Envoy's
    /// common_lb_config.healthy_panic_threshold, 50% when unset; Istio writes
    /// minHealthPercent, 0 by default, with outlierDetection).
    pub fn pick<'a>(&self, c: &'a ClusterPlan) -> Pick<'a> {
        let ejected = self.ejected(&c.name);
        let healthy: Vec<_> = c
            .endpoints
            .iter()
            .filter(|e| !ejected.contains(&e.pod))
            .collect();
        if ejected.is_empty() {
            return Pick::Endpoints(healthy);
        }
        let threshold = c.policy.healthy_panic_threshold.unwrap_or(50.0);
        let healthy_pct = 100.0 * healthy.len() as f64 / c.endpoints.len().max(1) as f64;
        if threshold > 0.0 && healthy_pct < threshold {
            return Pick::Endpoints(c.endpoints.iter().collect());
        }
        if healthy.is_empty() {
            return Pick::NoHealthy(ejected.into_iter().collect());
        }
        Pick::Endpoints(healthy)
    }

    /// Counts the answers of `n` requests that took `p`'s outcomes: each outcome that a
    /// backend answered gets its share of the requests, spread round robin over the
    /// outcome's endpoints.
    pub fn record(&mut self, mesh: &Mesh, p: &Prediction, n: u32) {
        for b in p.outcomes() {
            let (Some(name), Some(backend), Some(status)) = (&b.cluster, &b.backend, b.status)
            else {
                continue;
            };
            let Some(c) = mesh.clusters.get(name) else {
                continue;
            };
            let Some(t) = c.policy.outlier.as_ref().map(Thresholds::of) else {
                continue;
            };
            let pods: Vec<usize> = c
                .endpoints
                .iter()
                .map(|e| e.pod)
                .filter(|i| backend.pods.contains(&mesh.pods[*i].name))
                .collect();
            let requests = (b.share * f64::from(n)).round() as usize;
            self.answered(c, &t, &pods, status, requests);
        }
    }

    /// `requests` answers with `status` from `pods` of cluster `c`.
    fn answered(
        &mut self,
        c: &ClusterPlan,
        t: &Thresholds,
        pods: &[usize],
        status: u16,
        requests: usize,
    ) {
        if pods.is_empty() {
            return;
        }
        let hosts = c.endpoints.len();
        let state = self.clusters.entry(c.name.clone()).or_default();
        for _ in 0..requests {
            let pod = pods[state.cursor % pods.len()];
            state.cursor += 1;
            let n = state.counters.entry(pod).or_default();
            if !(500..600).contains(&status) {
                *n = Counters::default();
                continue;
            }
            n.consecutive_5xx += 1;
            if (502..=504).contains(&status) {
                n.consecutive_gateway += 1;
            } else {
                n.consecutive_gateway = 0;
            }
            let reached = t.consecutive_5xx.is_some_and(|m| n.consecutive_5xx >= m)
                || t.consecutive_gateway
                    .is_some_and(|m| n.consecutive_gateway >= m);
            if !reached || state.ejected.contains(&pod) {
                continue;
            }
            *n = Counters::default();
            if t.room_for_one_more(state.ejected.len(), hosts) {
                state.ejected.insert(pod);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(c5: Option<u32>, gw: Option<u32>, max: Option<u32>) -> OutlierPlan {
        OutlierPlan {
            consecutive_5xx: c5,
            consecutive_gateway_failure: gw,
            interval_ms: None,
            base_ejection_time_ms: None,
            max_ejection_percent: max,
        }
    }

    #[test]
    fn thresholds_follow_pilot_and_envoys_defaults() {
        let t = Thresholds::of(&plan(None, None, None));
        assert_eq!(
            (
                t.consecutive_5xx,
                t.consecutive_gateway,
                t.max_ejection_percent
            ),
            (Some(5), None, 10)
        );
        let t = Thresholds::of(&plan(Some(0), Some(2), Some(100)));
        assert_eq!(
            (
                t.consecutive_5xx,
                t.consecutive_gateway,
                t.max_ejection_percent
            ),
            (None, Some(2), 100)
        );
        assert!(t.counts(503) && !t.counts(500) && !t.counts(200));
    }

    #[test]
    fn max_ejection_percent_leaves_room_as_envoys_eject_host_computes_it() {
        let t = Thresholds::of(&plan(Some(1), None, Some(100)));
        assert!(t.room_for_one_more(0, 1) && !t.room_for_one_more(1, 1));
        // 10% of 5 hosts: not even one (Istio does not set always_eject_one_host).
        let t = Thresholds::of(&plan(Some(1), None, None));
        assert!(!t.room_for_one_more(0, 5));
        assert!(t.room_for_one_more(0, 10) && !t.room_for_one_more(1, 10));
        let t = Thresholds::of(&plan(Some(1), None, Some(50)));
        assert!(t.room_for_one_more(0, 2) && !t.room_for_one_more(1, 2));
    }
}

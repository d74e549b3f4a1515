//! Per-route HTTP filter settings of a VirtualService route: `fault` (Envoy's fault
//! filter) and `corsPolicy` (Envoy's CORS filter), as pilot translates them into the
//! route's `typed_per_filter_config` (pilot/pkg/networking/core/route/route.go at
//! 1.30.3: TranslateRoute, TranslateFault, TranslateCORSPolicy). The gateway's HTTP
//! connection manager carries both filters, empty, before the router
//! (pilot/pkg/networking/core/listener.go buildHTTPConnectionManager), so the
//! per-route settings are what decides.

use super::mesh::duration_ms;
use crate::fixtures::istio::{CorsPolicy, HttpFault, Percent, StringMatch};

/// Envoy's FractionalPercent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub numerator: u32,
    /// 100 (HUNDRED) or 1_000_000 (MILLION).
    pub denominator: u32,
}

impl Fraction {
    /// pilot route.go translatePercentToFractionalPercent: `uint32(value * 10000)` of
    /// a MILLION (Go truncates toward zero).
    pub fn of_percent(p: &Percent) -> Fraction {
        Fraction {
            numerator: (p.value * 10000.0).max(0.0) as u32,
            denominator: 1_000_000,
        }
    }

    /// pilot route.go translateIntegerToFractionalPercent: `n` of a HUNDRED.
    pub fn of_integer(n: i32) -> Fraction {
        Fraction {
            numerator: n.max(0) as u32,
            denominator: 100,
        }
    }

    /// The share of requests, 0.0 to 1.0 (Envoy caps the numerator at the denominator).
    pub fn share(&self) -> f64 {
        (self.numerator.min(self.denominator)) as f64 / self.denominator as f64
    }

    /// The percentage of requests, computed as `100 * n / d` (as the oracle's view of
    /// Envoy's JSON computes it, so equal fractions print equal).
    pub fn percent(&self) -> f64 {
        100.0 * f64::from(self.numerator) / f64::from(self.denominator.max(1))
    }

    pub fn denominator_name(&self) -> &'static str {
        if self.denominator == 1_000_000 {
            "MILLION"
        } else {
            "HUNDRED"
        }
    }
}

/// `fault.delay` with a fixed delay.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayPlan {
    pub fixed_delay_ms: u64,
    pub percentage: Fraction,
}

/// `fault.abort` with an HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct AbortPlan {
    pub http_status: u16,
    /// None: pilot leaves Envoy's percentage unset, which Envoy reads as 0%.
    pub percentage: Option<Fraction>,
}

impl AbortPlan {
    pub fn share(&self) -> f64 {
        self.percentage.map(|p| p.share()).unwrap_or(0.0)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultPlan {
    pub delay: Option<DelayPlan>,
    pub abort: Option<AbortPlan>,
}

/// pilot route.go TranslateFault: a delay needs `fixedDelay` (exponential delays are
/// dropped with a log line), its percentage is `percentage`, else the deprecated
/// integer `percent` (0 when absent); an abort needs `httpStatus` here (grpcStatus and
/// http2Error are reported as not modelled), its percentage only `percentage`. A fault
/// with neither is no fault.
pub fn fault_plan(f: &HttpFault) -> Option<FaultPlan> {
    let delay = f.delay.as_ref().and_then(|d| {
        Some(DelayPlan {
            fixed_delay_ms: d.fixed_delay.as_deref().and_then(duration_ms)?,
            percentage: match &d.percentage {
                Some(p) => Fraction::of_percent(p),
                None => Fraction::of_integer(d.percent.unwrap_or(0)),
            },
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        Some(AbortPlan {
            http_status: u16::try_from(a.http_status?).ok()?,
            percentage: a.percentage.as_ref().map(Fraction::of_percent),
        })
    });
    if delay.is_none() && abort.is_none() {
        return None;
    }
    Some(FaultPlan { delay, abort })
}

/// Envoy's CorsPolicy as pilot writes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CorsPlan {
    pub allow_origins: Vec<StringMatch>,
    /// Comma-joined, as pilot joins them.
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    /// Whole seconds (`max_age`), when set.
    pub max_age_s: Option<u64>,
    pub allow_credentials: Option<bool>,
    /// false only for `unmatchedPreflights: IGNORE`.
    pub forward_not_matching_preflights: bool,
}

/// pilot route.go TranslateCORSPolicy: `allowOrigins` as string matches, else the
/// deprecated `allowOrigin` as exact matches; lists comma-joined; maxAge in whole
/// seconds; filter enabled for 100%; forwardNotMatchingPreflights unless IGNORE.
pub fn cors_plan(c: &CorsPolicy) -> CorsPlan {
    let allow_origins = match (&c.allow_origins, &c.allow_origin) {
        (Some(m), _) => m.clone(),
        (None, Some(exact)) => exact.iter().cloned().map(StringMatch::Exact).collect(),
        (None, None) => Vec::new(),
    };
    CorsPlan {
        allow_origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age_s: c
            .max_age
            .as_deref()
            .and_then(duration_ms)
            .map(|ms| ms / 1000),
        allow_credentials: c.allow_credentials,
        forward_not_matching_preflights: c.unmatched_preflights.as_deref() != Some("IGNORE"),
    }
}

impl CorsPlan {
    /// Envoy's CORS filter: does `origin` match an allowed origin (exact, prefix, or a
    /// full RE2 match)? A matcher that matches `*` allows every origin
    /// (envoy/source/extensions/filters/http/cors/cors_filter.cc, isOriginAllowed).
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|m| {
            super::simulate::string_matches(m, "*", false)
                || super::simulate::string_matches(m, origin, false)
        })
    }
}

/// The route's per-filter settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteFilters {
    pub fault: Option<FaultPlan>,
    pub cors: Option<CorsPlan>,
}

impl RouteFilters {
    pub fn of(http: &crate::fixtures::istio::HttpRoute) -> RouteFilters {
        RouteFilters {
            fault: http.fault.as_ref().and_then(fault_plan),
            cors: http.cors_policy.as_ref().map(cors_plan),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::istio::{FaultAbort, FaultDelay};

    #[test]
    fn percentages_are_translated_as_pilot_does() {
        assert_eq!(
            Fraction::of_percent(&Percent { value: 50.0 }),
            Fraction {
                numerator: 500_000,
                denominator: 1_000_000
            }
        );
        // uint32(0.1 * 10000) truncates.
        assert_eq!(
            Fraction::of_percent(&Percent { value: 0.00015 }).numerator,
            1
        );
        assert_eq!(Fraction::of_integer(20).share(), 0.2);
        assert_eq!(Fraction::of_integer(150).share(), 1.0);
    }

    #[test]
    fn a_delay_without_percentage_uses_percent_else_never() {
        let f = HttpFault {
            delay: Some(FaultDelay {
                fixed_delay: Some("2s".into()),
                percentage: None,
                percent: None,
            }),
            abort: None,
        };
        let p = fault_plan(&f).unwrap();
        assert_eq!(p.delay.as_ref().unwrap().fixed_delay_ms, 2000);
        assert_eq!(p.delay.as_ref().unwrap().percentage.share(), 0.0);
    }

    #[test]
    fn an_abort_without_percentage_never_aborts_and_without_status_is_dropped() {
        let f = HttpFault {
            delay: None,
            abort: Some(FaultAbort {
                http_status: Some(503),
                percentage: None,
            }),
        };
        assert_eq!(fault_plan(&f).unwrap().abort.unwrap().share(), 0.0);
        let grpc_only = HttpFault {
            delay: None,
            abort: Some(FaultAbort {
                http_status: None,
                percentage: Some(Percent { value: 100.0 }),
            }),
        };
        assert_eq!(fault_plan(&grpc_only), None);
    }

    #[test]
    fn cors_falls_back_to_the_deprecated_exact_origins() {
        let c = CorsPolicy {
            allow_origin: Some(vec!["https://a.example".into()]),
            max_age: Some("24h".into()),
            unmatched_preflights: Some("IGNORE".into()),
            ..Default::default()
        };
        let p = cors_plan(&c);
        assert!(p.allows_origin("https://a.example"));
        assert!(!p.allows_origin("https://b.example"));
        assert_eq!(p.max_age_s, Some(86400));
        assert!(!p.forward_not_matching_preflights);
    }

    #[test]
    fn an_origin_matcher_that_matches_a_star_allows_every_origin() {
        // Envoy cors_filter.cc isOriginAllowed: `match("*") || match(origin)`, so the
        // common `allowOrigins: [{exact: "*"}]` allows any origin, and a prefix or
        // regex that matches "*" too.
        for m in ["exact: \"*\"", "prefix: \"*\"", "regex: \".*\""] {
            let c: CorsPolicy = serde_saphyr::from_str(&format!("allowOrigins:\n- {m}\n")).unwrap();
            let p = cors_plan(&c);
            assert!(p.allows_origin("https://anything.test"), "{m}");
        }
        let c: CorsPolicy =
            serde_saphyr::from_str("allowOrigins:\n- exact: https://a.example\n").unwrap();
        assert!(!cors_plan(&c).allows_origin("https://anything.test"));
    }
}

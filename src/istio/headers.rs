//! Header operations as Envoy applies them to what the simulation predicts: the
//! request headers a backend receives and the response headers the client receives
//! (VirtualService `headers.request` / `headers.response`, and the response headers
//! meshcheck's stub is asked to send).

use super::mesh::HeaderOps;
use std::collections::{BTreeMap, BTreeSet};

/// Headers by lower-case name, every value in order (a repeated header keeps each).
pub type Headers = BTreeMap<String, Vec<String>>;

/// The first value of header `name` (lower-case).
pub fn first(h: &Headers, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.first()).cloned()
}

/// Applies `ops` to `h` as Envoy's HeaderParser does (source/common/router/
/// header_parser.cc, HeaderParser::evaluateHeaders): every `remove` first, then the
/// headers to add in order; pilot writes `set` as OVERWRITE_IF_EXISTS_OR_ADD (every
/// value replaced) and `add` as APPEND_IF_EXISTS_OR_ADD (one more value) (pilot
/// networking/core/route/route.go, TranslateHeadersOperations, translateAppendHeaders: set then add).
pub fn apply(h: &mut Headers, ops: &HeaderOps) {
    for k in &ops.remove {
        h.remove(&k.to_ascii_lowercase());
    }
    for (k, v) in &ops.set {
        h.insert(k.to_ascii_lowercase(), vec![v.clone()]);
    }
    for (k, v) in &ops.add {
        h.entry(k.to_ascii_lowercase()).or_default().push(v.clone());
    }
}

/// The order in which Envoy applies a route's and one weighted destination's
/// operations: a single destination's are appended to the route's by pilot (route.go
/// processDestination), so they form one parser; a weighted cluster's own parser
/// runs before the route's (Envoy source/common/router/config_impl.h,
/// WeightedClusterEntry::finalizeRequestHeaders / finalizeResponseHeaders, then
/// RouteEntryImplBase's).
pub fn in_envoy_order(route: &HeaderOps, dest: &HeaderOps, weighted: bool) -> Vec<HeaderOps> {
    if weighted {
        vec![dest.clone(), route.clone()]
    } else {
        vec![route.then(dest)]
    }
}

/// The response headers the client receives, as far as the model knows them: those
/// the stub was asked to send and those the route's operations touch. Headers
/// Envoy or the stub add on their own (`date`, `server`, `content-type`, ...) are not
/// predicted; `known` names the headers whose values are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PredictedResponse {
    pub headers: Headers,
    pub known: BTreeSet<String>,
}

impl PredictedResponse {
    /// The stub's answer: the headers `x-meshcheck-response-header` asks for.
    pub fn from_stub(sent: &[(String, String)]) -> PredictedResponse {
        let mut p = PredictedResponse::default();
        for (k, v) in sent {
            let k = k.to_ascii_lowercase();
            p.known.insert(k.clone());
            p.headers.entry(k).or_default().push(v.clone());
        }
        p
    }

    /// An answer known to carry exactly `value` as `name` (a redirect's Location).
    pub fn with(name: &str, value: String) -> PredictedResponse {
        PredictedResponse::from_stub(&[(name.to_string(), value)])
    }

    /// After the route's response operations (`ops`, in Envoy's order).
    pub fn after(mut self, ops: &[HeaderOps]) -> PredictedResponse {
        for o in ops {
            let names = o
                .remove
                .iter()
                .chain(o.set.iter().map(|(k, _)| k))
                .chain(o.add.iter().map(|(k, _)| k));
            self.known.extend(names.map(|k| k.to_ascii_lowercase()));
            apply(&mut self.headers, o);
        }
        self
    }

    /// Every value of `name` the client receives, if the model knows them.
    pub fn values(&self, name: &str) -> Option<Vec<String>> {
        let name = name.to_ascii_lowercase();
        self.known
            .contains(&name)
            .then(|| self.headers.get(&name).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderOps {
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        HeaderOps {
            set: pairs(set),
            add: pairs(add),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn remove_runs_before_set_and_add_and_add_appends_a_value() {
        let mut h = Headers::new();
        h.insert("x-a".into(), vec!["client".into()]);
        h.insert("x-b".into(), vec!["1".into(), "2".into()]);
        apply(
            &mut h,
            &ops(
                &[("X-B", "set")],
                &[("x-a", "added"), ("x-c", "c")],
                &["x-a"],
            ),
        );
        assert_eq!(h["x-a"], vec!["added"]);
        assert_eq!(h["x-b"], vec!["set"]);
        assert_eq!(h["x-c"], vec!["c"]);
    }

    #[test]
    fn a_weighted_destinations_operations_run_before_the_routes() {
        let route = ops(&[("x-v", "route")], &[], &[]);
        let dest = ops(&[("x-v", "dest")], &[], &[]);
        let p = PredictedResponse::default().after(&in_envoy_order(&route, &dest, true));
        assert_eq!(p.values("x-v"), Some(vec!["route".to_string()]));
        let p = PredictedResponse::default().after(&in_envoy_order(&route, &dest, false));
        assert_eq!(p.values("x-v"), Some(vec!["dest".to_string()]));
    }

    #[test]
    fn only_headers_the_stub_or_the_route_touch_are_predicted() {
        let p = PredictedResponse::from_stub(&[("Foo".into(), "bar".into())]).after(&[ops(
            &[],
            &[("foo", "baz")],
            &["x-gone"],
        )]);
        assert_eq!(p.values("foo"), Some(vec!["bar".into(), "baz".into()]));
        assert_eq!(p.values("x-gone"), Some(vec![]));
        assert_eq!(p.values("date"), None);
    }
}

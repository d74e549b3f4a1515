//! What changes in the Envoy configuration istiod generates for the same fixtures
//! between two Istio versions, in words: per gateway pod, the listeners, route
//! configurations (per virtual host and route) and clusters added, removed or
//! changed, each change naming the fields that differ with both values.

use crate::oracle::output::{GatewayConfig, Output, SimResult};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Field differences shown per changed object (the rest are counted).
const FIELDS_SHOWN: usize = 6;
/// Characters of a value shown.
const VALUE_CHARS: usize = 60;

/// One object that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `listener 0.0.0.0_8080`, `route http.8080 / vhost * / route atlas-ui`, ...
    pub object: String,
    /// `added`, `removed`, or the differing fields (`path: A -> B`).
    pub what: Vec<String>,
}

/// The differences for one gateway pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayDiff {
    pub pod: String,
    pub changes: Vec<Change>,
}

/// The difference between istiod `a`'s and istiod `b`'s configuration.
pub fn diff(a: &Output, b: &Output) -> Vec<GatewayDiff> {
    let pods: std::collections::BTreeSet<&str> = a
        .gateways
        .iter()
        .chain(&b.gateways)
        .map(|g| g.pod.as_str())
        .collect();
    pods.into_iter()
        .map(|pod| {
            let ga = a.gateways.iter().find(|g| g.pod == pod);
            let gb = b.gateways.iter().find(|g| g.pod == pod);
            GatewayDiff {
                pod: pod.to_string(),
                changes: gateway_changes(ga, gb),
            }
        })
        .collect()
}

fn gateway_changes(a: Option<&GatewayConfig>, b: Option<&GatewayConfig>) -> Vec<Change> {
    let pick = |g: Option<&GatewayConfig>, f: fn(&GatewayConfig) -> &Vec<Value>| {
        g.map(|g| f(g).clone()).unwrap_or_default()
    };
    let mut out = Vec::new();
    out.extend(named_changes(
        "listener",
        &pick(a, |g| &g.listeners),
        &pick(b, |g| &g.listeners),
    ));
    out.extend(route_changes(
        &pick(a, |g| &g.routes),
        &pick(b, |g| &g.routes),
    ));
    out.extend(named_changes(
        "cluster",
        &pick(a, |g| &g.clusters),
        &pick(b, |g| &g.clusters),
    ));
    out
}

fn name_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)")
        .to_string()
}

fn by_name<'a>(items: &'a [Value], key: &str) -> BTreeMap<String, &'a Value> {
    items.iter().map(|v| (name_of(v, key), v)).collect()
}

/// Objects matched by `name`: added, removed, or changed (the differing fields).
fn named_changes(kind: &str, a: &[Value], b: &[Value]) -> Vec<Change> {
    keyed_changes(kind, &by_name(a, "name"), &by_name(b, "name"))
}

fn keyed_changes(
    kind: &str,
    a: &BTreeMap<String, &Value>,
    b: &BTreeMap<String, &Value>,
) -> Vec<Change> {
    let mut out = Vec::new();
    for (name, va) in a {
        let object = format!("{kind} {name}");
        match b.get(name) {
            None => out.push(Change {
                object,
                what: vec!["removed".into()],
            }),
            Some(vb) => {
                let fields = field_changes(va, vb);
                if !fields.is_empty() {
                    out.push(Change {
                        object,
                        what: fields,
                    });
                }
            }
        }
    }
    for name in b.keys().filter(|n| !a.contains_key(*n)) {
        out.push(Change {
            object: format!("{kind} {name}"),
            what: vec!["added".into()],
        });
    }
    out
}

/// Route configurations compared per virtual host and per route, so a change names
/// the route it is in.
fn route_changes(a: &[Value], b: &[Value]) -> Vec<Change> {
    let (ma, mb) = (by_name(a, "name"), by_name(b, "name"));
    let mut out = Vec::new();
    for (name, ra) in &ma {
        let Some(rb) = mb.get(name) else {
            out.push(Change {
                object: format!("route {name}"),
                what: vec!["removed".into()],
            });
            continue;
        };
        out.extend(vhost_changes(name, ra, rb));
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("virtual_hosts");
            }
            v
        };
        let fields = field_changes(&strip(ra), &strip(rb));
        if !fields.is_empty() {
            out.push(Change {
                object: format!("route {name}"),
                what: fields,
            });
        }
    }
    for name in mb.keys().filter(|n| !ma.contains_key(*n)) {
        out.push(Change {
            object: format!("route {name}"),
            what: vec!["added".into()],
        });
    }
    out
}

fn list<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A virtual host's routes by name (`#i` for an unnamed one).
fn routes_by_name(h: &Value) -> BTreeMap<String, &Value> {
    list(h, "routes")
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let name = r
                .get("name")
                .and_then(Value::as_str)
                .map_or_else(|| format!("#{i}"), str::to_string);
            (name, r)
        })
        .collect()
}

fn vhost_changes(route: &str, a: &Value, b: &Value) -> Vec<Change> {
    let (va, vb) = (
        by_name(list(a, "virtual_hosts"), "name"),
        by_name(list(b, "virtual_hosts"), "name"),
    );
    let mut out = Vec::new();
    for (host, ha) in &va {
        let Some(hb) = vb.get(host) else { continue };
        out.extend(keyed_changes(
            &format!("route {route} / vhost {host} / route"),
            &routes_by_name(ha),
            &routes_by_name(hb),
        ));
    }
    let hosts =
        |m: &BTreeMap<String, &Value>| -> Vec<Value> { m.values().map(|v| (*v).clone()).collect() };
    let only_hosts = keyed_changes(
        &format!("route {route} / vhost"),
        &by_name(&hosts(&va), "name"),
        &by_name(&hosts(&vb), "name"),
    );
    // Virtual hosts present on both sides were compared route by route above.
    out.extend(
        only_hosts
            .into_iter()
            .filter(|c| c.what == ["added"] || c.what == ["removed"]),
    );
    out
}

/// The leaf fields that differ between `a` and `b` (`path: old -> new`), at most
/// [`FIELDS_SHOWN`] and a count of the rest.
pub fn field_changes(a: &Value, b: &Value) -> Vec<String> {
    let mut all = Vec::new();
    walk("", a, b, &mut all);
    if all.len() > FIELDS_SHOWN {
        let more = all.len() - FIELDS_SHOWN;
        all.truncate(FIELDS_SHOWN);
        all.push(format!("... and {more} more field(s)"));
    }
    all
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            let keys: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match (ma.get(k), mb.get(k)) {
                    (Some(x), Some(y)) => walk(&p, x, y, out),
                    (Some(x), None) => out.push(format!("{p}: {} -> (absent)", short(x))),
                    (None, Some(y)) => out.push(format!("{p}: (absent) -> {}", short(y))),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(xa), Value::Array(xb)) if xa.len() == xb.len() => {
            for (i, (x, y)) in xa.iter().zip(xb).enumerate() {
                walk(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (Value::Array(xa), Value::Array(xb)) => out.push(format!(
            "{path}: {} item(s) -> {} item(s)",
            xa.len(),
            xb.len()
        )),
        (x, y) if x != y => out.push(format!("{path}: {} -> {}", short(x), short(y))),
        _ => {}
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > VALUE_CHARS {
        let cut: String = s.chars().take(VALUE_CHARS).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Where istiod sends a request of the suite, in one line (what its Envoy config
/// makes of it: the route, then its action).
fn answer(s: &SimResult) -> String {
    if !s.error.is_empty() {
        return format!("no route ({})", s.error);
    }
    let Some(r) = &s.route else {
        return "no route".into();
    };
    let route = if r.name.is_empty() {
        format!("route #{}", r.index)
    } else {
        format!("route {}", r.name)
    };
    let action = if let Some(d) = &r.direct_response {
        format!("direct response {}", d.status)
    } else if r.redirect.is_some() {
        "redirect".to_string()
    } else {
        let to: Vec<String> = r
            .destinations
            .iter()
            .map(|d| format!("{} ({}%)", d.cluster, d.weight))
            .collect();
        let mut a = format!("to {}", to.join(", "));
        if !r.rewritten_path.is_empty() {
            a.push_str(&format!(", path {}", r.rewritten_path));
        }
        a
    };
    format!("{route}: {action}")
}

/// The suite's requests whose answer differs between `a` and `b`.
pub fn request_changes(a: &Output, b: &Output) -> Vec<Change> {
    a.simulations
        .iter()
        .filter_map(|sa| {
            let sb = b.simulations.iter().find(|s| s.id == sa.id)?;
            let (x, y) = (answer(sa), answer(sb));
            (x != y).then(|| Change {
                object: format!("request {}", sa.id),
                what: vec![
                    format!("{} {x}", a.istio.release),
                    format!("{} {y}", b.istio.release),
                ],
            })
        })
        .collect()
}

/// The difference as text for the console and the report.
pub fn describe(a: &Output, b: &Output, diffs: &[GatewayDiff]) -> String {
    let mut out = format!(
        "configuration difference, istiod {} -> istiod {} (same fixtures):\n",
        a.istio.release, b.istio.release
    );
    for g in diffs {
        if g.changes.is_empty() {
            let _ = writeln!(out, "  gateway {}: no change", g.pod);
            continue;
        }
        let _ = writeln!(
            out,
            "  gateway {}: {} object(s) changed",
            g.pod,
            g.changes.len()
        );
        write_changes(&mut out, &g.changes);
    }
    let requests = request_changes(a, b);
    if requests.is_empty() {
        let _ = writeln!(
            out,
            "  the suite's {} request(s) go where they went",
            a.simulations.len()
        );
    } else {
        let _ = writeln!(out, "  requests of the suite answered differently:");
        write_changes(&mut out, &requests);
    }
    out
}

fn write_changes(out: &mut String, changes: &[Change]) {
    for c in changes {
        if let [one] = c.what.as_slice() {
            let _ = writeln!(out, "    {}: {one}", c.object);
        } else {
            let _ = writeln!(out, "    {}:", c.object);
            for w in &c.what {
                let _ = writeln!(out, "      {w}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn output(release: &str, routes: Value, clusters: Value) -> Output {
        serde_json::from_value(json!({
            "istio": {"release": release, "module": "m"},
            "rejected": [], "warnings": [], "simulations": [],
            "gateways": [{
                "pod": "istio-ingress/gw-0", "route_tables": [], "cluster_summary": [],
                "listeners": [{"name": "0.0.0.0_8080", "address": {"socket_address": {"port_value": 8080}}}],
                "routes": routes, "clusters": clusters, "endpoints": [],
            }],
        }))
        .unwrap()
    }

    #[test]
    fn a_changed_route_field_is_named_with_both_values() {
        let ra = json!([{"name": "http.8080", "virtual_hosts": [{"name": "*:80", "routes": [
            {"name": "atlas-ui", "route": {"timeout": "0s", "cluster": "c1"}}]}]}]);
        let rb = json!([{"name": "http.8080", "virtual_hosts": [{"name": "*:80", "routes": [
            {"name": "atlas-ui", "route": {"cluster": "c1", "max_grpc_timeout": "0s"}}]}]}]);
        let a = output("1.30.3", ra, json!([{"name": "c1"}]));
        let b = output("1.31.0", rb, json!([{"name": "c1"}, {"name": "c2"}]));
        let d = diff(&a, &b);
        let text = describe(&a, &b, &d);
        assert!(
            text.contains("route http.8080 / vhost *:80 / route atlas-ui:"),
            "{text}"
        );
        assert!(text.contains("route.timeout: \"0s\" -> (absent)"), "{text}");
        assert!(
            text.contains("route.max_grpc_timeout: (absent) -> \"0s\""),
            "{text}"
        );
        assert!(text.contains("cluster c2: added"), "{text}");
        assert!(
            !text.contains("listener"),
            "an unchanged listener is not listed: {text}"
        );
    }

    #[test]
    fn a_request_routed_elsewhere_is_named_with_both_answers() {
        let sim = |cluster: &str| {
            json!([{"id": "routing::atlas-ui", "gateway": "istio-ingress/gw-0", "route": {
                "name": "atlas-ui", "index": 0, "match": {}, "action": "route",
                "destinations": [{"cluster": cluster, "weight": 100, "exists": true}]}}])
        };
        let mut a = output("1.30.3", json!([]), json!([]));
        let mut b = output("1.31.0", json!([]), json!([]));
        a.simulations = serde_json::from_value(sim("outbound|80||atlas-ui")).unwrap();
        b.simulations = serde_json::from_value(sim("outbound|80||authz")).unwrap();
        let text = describe(&a, &b, &diff(&a, &b));
        assert!(
            text.contains("requests of the suite answered differently:"),
            "{text}"
        );
        assert!(
            text.contains("1.30.3 route atlas-ui: to outbound|80||atlas-ui (100%)"),
            "{text}"
        );
        assert!(
            text.contains("1.31.0 route atlas-ui: to outbound|80||authz (100%)"),
            "{text}"
        );
        let same = describe(&a, &a, &diff(&a, &a));
        assert!(
            same.contains("the suite's 1 request(s) go where they went"),
            "{same}"
        );
    }

    #[test]
    fn identical_configuration_says_no_change() {
        let r = json!([{"name": "http.8080", "virtual_hosts": []}]);
        let a = output("1.30.3", r.clone(), json!([{"name": "c1"}]));
        let d = diff(&a, &a);
        assert!(d.iter().all(|g| g.changes.is_empty()));
        assert!(describe(&a, &a, &d).contains("gateway istio-ingress/gw-0: no change"));
    }

    #[test]
    fn many_differences_are_capped_and_counted() {
        let a = json!({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8});
        let b = json!({"a": 0, "b": 0, "c": 0, "d": 0, "e": 0, "f": 0, "g": 0, "h": 0});
        let f = field_changes(&a, &b);
        assert_eq!(f.len(), FIELDS_SHOWN + 1);
        assert_eq!(f.last().unwrap(), "... and 2 more field(s)");
    }
}

//! Field-by-field comparison of Envoy JSON the model writes with istiod's: every field
//! the model sets must have the same value on istiod's side, where a field istiod
//! leaves out has protobuf's default (false, 0, "", an enum's first value, empty; for a
//! wrapper, Envoy's documented default), except a Duration, which unset is not `0s`. Durations compare by value (`0.500s` is
//! `0.5s`), 64-bit integers written as strings by value.

use serde_json::{Map, Value};

/// Enum fields whose first value (the zero protojson leaves out) is not obvious from
/// the value alone: (field, zero value's name).
const ENUM_ZEROS: &[(&str, &str)] = &[
    ("codec_type", "AUTO"),
    ("forward_client_cert_details", "SANITIZE"),
    (
        "path_with_escaped_slashes_action",
        "IMPLEMENTATION_SPECIFIC_DEFAULT",
    ),
    ("server_header_transformation", "OVERWRITE"),
    ("response_code", "MOVED_PERMANENTLY"),
    ("denominator", "HUNDRED"),
    ("lb_policy", "ROUND_ROBIN"),
];

/// BoolValue fields Envoy reads as true when unset (envoy.config.route.v3.RouteMatch
/// case_sensitive: "Defaults to true").
const TRUE_WHEN_UNSET: &[&str] = &["case_sensitive"];

/// The fields of `mine` whose value differs in `theirs` (None: istiod wrote nothing
/// there): (dotted field, mine, theirs), in `mine`'s order.
pub fn differing(
    mine: &Map<String, Value>,
    theirs: Option<&Value>,
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    collect(mine, theirs, "", &mut out);
    out
}

fn collect(
    mine: &Map<String, Value>,
    theirs: Option<&Value>,
    prefix: &str,
    out: &mut Vec<(String, String, String)>,
) {
    for (k, v) in mine {
        let field = format!("{prefix}{k}");
        let t = theirs.and_then(|t| t.get(k));
        match (v, t) {
            (Value::Object(m), t) if t.is_none_or(Value::is_object) => {
                collect(m, t, &format!("{field}."), out)
            }
            (v, None) if is_default(k, v) => {}
            (v, Some(t)) if equal(v, t) => {}
            (v, t) => out.push((
                field,
                v.to_string(),
                t.map_or("unset".to_string(), Value::to_string),
            )),
        }
    }
}

/// Whether `v` is what protobuf leaves out of field `key`'s JSON.
fn is_default(key: &str, v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => *b == TRUE_WHEN_UNSET.contains(&key),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || ENUM_ZEROS.contains(&(key, s.as_str())),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.iter().all(|(k, v)| is_default(k, v)),
    }
}

fn equal(mine: &Value, theirs: &Value) -> bool {
    match (mine, theirs) {
        (Value::String(a), Value::String(b)) => {
            a == b
                || matches!(
                    (crate::istio::duration_ms(a), crate::istio::duration_ms(b)),
                    (Some(x), Some(y)) if x == y && a.ends_with('s') && b.ends_with('s')
                )
        }
        (Value::Number(_) | Value::String(_), Value::Number(_) | Value::String(_)) => {
            number(mine).is_some() && number(mine) == number(theirs)
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| equal(x, y))
        }
        (Value::Object(a), Value::Object(b)) => a.iter().all(|(k, v)| match b.get(k) {
            Some(t) => equal(v, t),
            None => is_default(k, v),
        }),
        (a, b) => a == b,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn diff(mine: Value, theirs: Value) -> Vec<(String, String, String)> {
        differing(mine.as_object().unwrap(), Some(&theirs))
    }

    #[test]
    fn a_field_istiod_leaves_out_is_its_default() {
        let d = diff(
            json!({"strip_any_host_port": true, "normalize_path": false, "codec_type": "AUTO",
                   "case_sensitive": true}),
            json!({}),
        );
        assert_eq!(
            d,
            [(
                "strip_any_host_port".to_string(),
                "true".to_string(),
                "unset".to_string()
            )]
        );
    }

    #[test]
    fn nested_fields_durations_and_numbers_compare_by_value() {
        let d = diff(
            json!({"details": {"cert": false, "uri": true}, "timeout": "0.500s", "n": "5",
                   "idle": "0s"}),
            json!({"details": {"uri": true, "dns": true}, "timeout": "0.5s", "n": 5}),
        );
        assert_eq!(
            d,
            [(
                "idle".to_string(),
                "\"0s\"".to_string(),
                "unset".to_string()
            )]
        );
        let d = diff(json!({"details": {"cert": true}}), json!({"details": {}}));
        assert_eq!(d[0].0, "details.cert");
    }
}

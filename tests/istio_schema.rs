//! The shipped fixtures' Istio objects (Gateway, VirtualService, DestinationRule of
//! `networking.istio.io/v1`) validate against Istio 1.30's own OpenAPI v3 schemas,
//! the ones its CRDs carry, so a fixture the API server would reject (or silently
//! prune) is caught here rather than on a cluster.
//!
//! The schemas are Istio's data and are not part of meshcheck: they are read at test
//! time from `<CARGO_MANIFEST_DIR>/../shared/reference/istio-1.30.3-networking-v1-schemas.json`
//! (a JSON object keyed by kind, each the schema of the whole object or of its
//! `spec`; `MESHCHECK_ISTIO_SCHEMAS=<file>` reads another copy). When that file is
//! absent the schema tests say so on stderr (`-- --nocapture` shows it) and pass.
//!
//! The validator below is a small structural OpenAPI v3 validator in the spirit of
//! the Kubernetes API server's CRD validation: `type`, `properties`,
//! `additionalProperties` (bool and schema), `required`, `items`, `enum`,
//! `minimum`/`maximum` (and the exclusive forms), `minLength`/`maxLength`,
//! `minItems`/`maxItems`, `minProperties`/`maxProperties`, `nullable`,
//! `oneOf`/`anyOf`/`allOf`/`not`, `x-kubernetes-preserve-unknown-fields` and
//! `x-kubernetes-int-or-string`. One deliberate difference: a field the schema does
//! not list (where it lists `properties` and allows no additional ones) is an error
//! here, where the API server would prune it silently, so typos are caught. Not
//! evaluated: `format`, `pattern` and the CEL rules of `x-kubernetes-validations`
//! (e.g. duration syntax); `apiVersion`, `kind` and `metadata` at the root are
//! checked by the loader, not by the schema (as for every CRD).

use meshcheck::fixtures::load_dir;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

const SCHEMA_FILE: &str = "istio-1.30.3-networking-v1-schemas.json";
const KINDS: [&str; 3] = ["Gateway", "VirtualService", "DestinationRule"];
const API_VERSION: &str = "networking.istio.io/v1";

// ---------------------------------------------------------------------------------
// The validator

/// One violation: where (a JSON path such as `spec.http[0].route[0].destination.host`)
/// and what.
#[derive(Debug, Clone, PartialEq)]
struct Violation {
    path: String,
    message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "<root>"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

fn child_path(path: &str, key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (simple, path.is_empty()) {
        (true, true) => key.to_string(),
        (true, false) => format!("{path}.{key}"),
        (false, _) => format!("{path}[{}]", serde_json::to_string(key).unwrap()),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    match v {
        Value::Number(n) => {
            n.is_i64()
                || n.is_u64()
                || n.as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
        }
        _ => false,
    }
}

fn has_type(v: &Value, ty: &str) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => is_integer(v),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true, // an unknown type name constrains nothing we know of
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Validates `v` (at `path`) against `schema`, appending violations to `out`.
fn validate(schema: &Value, v: &Value, path: &str, out: &mut Vec<Violation>) {
    let mut err = |message: String| {
        out.push(Violation {
            path: path.to_string(),
            message,
        })
    };
    let Some(s) = schema.as_object() else {
        // `true`/`{}`-like schemas accept anything.
        return;
    };

    if v.is_null() {
        if !flag(schema, "nullable") {
            err("null is not allowed here (the schema is not nullable)".into());
        }
        return;
    }

    if flag(schema, "x-kubernetes-int-or-string") && !(is_integer(v) || v.is_string()) {
        err(format!(
            "expected an integer or a string, found {}",
            json_type(v)
        ));
        return;
    }
    if let Some(ty) = s.get("type").and_then(Value::as_str) {
        if !has_type(v, ty) {
            err(format!(
                "expected {ty}, found {} {}",
                json_type(v),
                short(v)
            ));
            return; // nothing below makes sense for the wrong type
        }
    }

    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            err(format!("{} is not one of [{}]", short(v), list.join(", ")));
        }
    }

    if let Some(x) = v.as_f64() {
        let bound = |k: &str| s.get(k).and_then(Value::as_f64);
        if let Some(min) = bound("minimum") {
            if x < min || (flag(schema, "exclusiveMinimum") && x == min) {
                err(format!("{x} is less than the minimum {min}"));
            }
        }
        if let Some(max) = bound("maximum") {
            if x > max || (flag(schema, "exclusiveMaximum") && x == max) {
                err(format!("{x} is greater than the maximum {max}"));
            }
        }
    }

    let limit = |k: &str| s.get(k).and_then(Value::as_u64).map(|n| n as usize);
    let mut size_check = |what: &str, len: usize, min: &str, max: &str| {
        if let Some(m) = limit(min) {
            if len < m {
                err(format!("has {len} {what}, fewer than {min} {m}"));
            }
        }
        if let Some(m) = limit(max) {
            if len > m {
                err(format!("has {len} {what}, more than {max} {m}"));
            }
        }
    };
    match v {
        Value::String(st) => size_check("characters", st.chars().count(), "minLength", "maxLength"),
        Value::Array(a) => size_check("items", a.len(), "minItems", "maxItems"),
        Value::Object(m) => size_check("properties", m.len(), "minProperties", "maxProperties"),
        _ => {}
    }

    match v {
        Value::Object(m) => validate_object(s, schema, m, path, out),
        Value::Array(items) => {
            if let Some(item_schema) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }

    // Combinators: the value as a whole must (not) match the branches. A branch
    // matches when validating against it yields no violation.
    let matches = |b: &Value| {
        let mut tmp = Vec::new();
        validate(b, v, path, &mut tmp);
        tmp.is_empty()
    };
    if let Some(branches) = s.get("allOf").and_then(Value::as_array) {
        for b in branches {
            validate(b, v, path, out);
        }
    }
    if let Some(branches) = s.get("oneOf").and_then(Value::as_array) {
        let n = branches.iter().filter(|b| matches(b)).count();
        if n != 1 {
            out.push(Violation {
                path: path.to_string(),
                message: format!(
                    "must match exactly one of the oneOf alternatives [{}], matches {n}{}",
                    describe_branches(branches, " | "),
                    present_fields(branches, v),
                ),
            });
        }
    }
    if let Some(branches) = s.get("anyOf").and_then(Value::as_array) {
        if !branches.iter().any(&matches) {
            let mut why = Vec::new();
            for b in branches {
                validate(b, v, path, &mut why);
            }
            let why: Vec<String> = why.iter().map(|w| w.message.clone()).collect();
            out.push(Violation {
                path: path.to_string(),
                message: format!(
                    "must match at least one of the anyOf alternatives [{}] ({})",
                    describe_branches(branches, " | "),
                    why.join("; ")
                ),
            });
        }
    }
    if let Some(b) = s.get("not") {
        if matches(b) {
            out.push(Violation {
                path: path.to_string(),
                message: format!("must not match {}", describe_branch(b)),
            });
        }
    }
}

fn validate_object(
    s: &Map<String, Value>,
    schema: &Value,
    m: &Map<String, Value>,
    path: &str,
    out: &mut Vec<Violation>,
) {
    let props = s.get("properties").and_then(Value::as_object);
    let additional = s.get("additionalProperties");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    for (k, child) in m {
        let p = child_path(path, k);
        if let Some(ps) = props.and_then(|ps| ps.get(k)) {
            validate(ps, child, &p, out);
            continue;
        }
        match additional {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => out.push(Violation {
                path: p,
                message: "unknown field (additionalProperties is false)".into(),
            }),
            Some(sub @ Value::Object(_)) => validate(sub, child, &p, out),
            _ if preserve || props.is_none() => {}
            _ => {
                let known: Vec<&str> = props.unwrap().keys().map(String::as_str).collect();
                out.push(Violation {
                    path: p,
                    message: format!(
                        "unknown field{} (known here: {})",
                        did_you_mean(k, &known),
                        known.join(", ")
                    ),
                });
            }
        }
    }
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !m.contains_key(r) {
                out.push(Violation {
                    path: child_path(path, r),
                    message: "required field is missing".into(),
                });
            }
        }
    }
}

/// `, did you mean "x"?` when a known name is one edit (or a plural) away.
fn did_you_mean(k: &str, known: &[&str]) -> String {
    let close = known.iter().find(|c| {
        let (a, b) = (k.as_bytes(), c.as_bytes());
        let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
        match long.len() - short.len() {
            0 => a.iter().zip(b).filter(|(x, y)| x != y).count() == 1,
            1 => (0..long.len()).any(|i| [&long[..i], &long[i + 1..]].concat() == short),
            _ => false,
        }
    });
    close
        .map(|c| format!(", did you mean `{c}`?"))
        .unwrap_or_default()
}

/// A short rendering of a branch, for messages: `{exact}`, `not(...)`, `integer`.
fn describe_branch(b: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(req) = b.get("required").and_then(Value::as_array) {
        let names: Vec<&str> = req.iter().filter_map(Value::as_str).collect();
        parts.push(format!("has {}", names.join("+")));
    }
    if let Some(t) = b.get("type").and_then(Value::as_str) {
        parts.push(t.to_string());
    }
    if let Some(n) = b.get("not") {
        parts.push(format!("not({})", describe_branch(n)));
    }
    for (k, sep) in [("anyOf", " or "), ("oneOf", " xor "), ("allOf", " and ")] {
        if let Some(bs) = b.get(k).and_then(Value::as_array) {
            parts.push(format!("({})", describe_branches(bs, sep)));
        }
    }
    if parts.is_empty() {
        "{...}".into()
    } else {
        parts.join(" ")
    }
}

fn describe_branches(bs: &[Value], sep: &str) -> String {
    bs.iter().map(describe_branch).collect::<Vec<_>>().join(sep)
}

/// `; present: exact, prefix` — the fields the oneOf branches name that are set.
fn present_fields(branches: &[Value], v: &Value) -> String {
    fn names(b: &Value, out: &mut Vec<String>) {
        if let Some(req) = b.get("required").and_then(Value::as_array) {
            out.extend(req.iter().filter_map(Value::as_str).map(String::from));
        }
        for k in ["anyOf", "oneOf", "allOf"] {
            for sub in b.get(k).and_then(Value::as_array).into_iter().flatten() {
                names(sub, out);
            }
        }
        if let Some(n) = b.get("not") {
            names(n, out);
        }
    }
    let mut all = Vec::new();
    for b in branches {
        names(b, &mut all);
    }
    all.dedup();
    let present: Vec<String> = all
        .into_iter()
        .filter(|n| v.get(n.as_str()).is_some())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if present.is_empty() {
        String::new()
    } else {
        format!(
            " (set: {}; they are mutually exclusive)",
            present.join(", ")
        )
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------
// Istio's schemas

struct Schemas {
    path: PathBuf,
    by_kind: BTreeMap<String, Value>,
}

impl Schemas {
    /// Istio's schemas, or None (after saying why) when the file is not there.
    fn load() -> Option<Schemas> {
        let path = match std::env::var_os("MESHCHECK_ISTIO_SCHEMAS") {
            Some(p) => PathBuf::from(p),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/reference")
                .join(SCHEMA_FILE),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "SKIPPED: Istio schema validation: {} not found. The schemas are Istio's \
                     data and are not shipped with meshcheck; put Istio 1.30's \
                     networking.istio.io/v1 CRD schemas there (JSON keyed by kind) to run it.",
                    path.display()
                );
                return None;
            }
            Err(e) => panic!("cannot read {}: {e}", path.display()),
        };
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let by_kind: BTreeMap<String, Value> = match v {
            Value::Object(m) => m.into_iter().collect(),
            other => panic!(
                "{}: expected an object keyed by kind, found {}",
                path.display(),
                json_type(&other)
            ),
        };
        for kind in KINDS {
            let s = by_kind
                .get(kind)
                .unwrap_or_else(|| panic!("{} has no schema for {kind}", path.display()));
            assert!(
                s.get("properties").is_some_and(Value::is_object),
                "{}: the {kind} schema has no properties",
                path.display()
            );
        }
        Some(Schemas { path, by_kind })
    }

    /// Violations of a whole object (with apiVersion/kind/metadata) of `kind`.
    fn check(&self, kind: &str, object: &Value) -> Vec<Violation> {
        let schema = &self.by_kind[kind];
        let mut out = Vec::new();
        let whole_object = schema
            .get("properties")
            .and_then(|p| p.get("spec"))
            .is_some();
        if whole_object {
            // apiVersion, kind and metadata are the API server's (and the loader's)
            // business; a CRD schema describes the rest.
            let mut rest = object.as_object().cloned().unwrap_or_default();
            for k in ["apiVersion", "kind", "metadata"] {
                rest.remove(k);
            }
            validate(schema, &Value::Object(rest), "", &mut out);
        } else {
            let spec = object.get("spec").cloned().unwrap_or(Value::Null);
            validate(schema, &spec, "spec", &mut out);
        }
        out
    }
}

// ---------------------------------------------------------------------------------
// The shipped fixtures against Istio's schemas

#[test]
fn shipped_istio_objects_validate_against_istio_1_30_schemas() {
    let Some(schemas) = Schemas::load() else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ingress");
    let fx = load_dir(&dir).unwrap_or_else(|e| panic!("failed to load fixtures: {e}"));
    let mut checked: BTreeMap<&str, usize> = KINDS.iter().map(|k| (*k, 0)).collect();
    let mut failures = Vec::new();
    for obj in &fx.objects {
        if !KINDS.contains(&obj.kind.as_str())
            || !obj.api_version.starts_with("networking.istio.io/")
        {
            continue;
        }
        if obj.api_version != API_VERSION {
            eprintln!(
                "{}: {}: not validated: apiVersion {} (the schemas are for {API_VERSION})",
                obj.source,
                obj.describe(),
                obj.api_version
            );
            continue;
        }
        *checked.get_mut(obj.kind.as_str()).unwrap() += 1;
        for v in schemas.check(&obj.kind, &obj.raw) {
            failures.push(format!("{}: {}: {v}", obj.source, obj.describe()));
        }
    }
    eprintln!(
        "validated against {}: {}",
        schemas.path.display(),
        checked
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        failures.is_empty(),
        "fixtures violate Istio 1.30's schemas:\n{}",
        failures.join("\n")
    );
    for (kind, n) in &checked {
        assert!(
            *n >= 1,
            "no {API_VERSION} {kind} in {}: nothing was validated for that kind",
            dir.display()
        );
    }
}

// ---------------------------------------------------------------------------------
// The validator catches what it must, with the right path (Istio's schemas)

fn gateway() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "g", "namespace": "atlas"},
        "spec": {
            "selector": {"istio": "my-ingress-gateway"},
            "servers": [{
                "port": {"number": 80, "name": "http", "protocol": "HTTP"},
                "hosts": ["*"]
            }]
        }
    })
}

fn virtual_service() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "vs", "namespace": "atlas"},
        "spec": {
            "hosts": ["*"],
            "gateways": ["atlas-gateway"],
            "http": [{
                "name": "r",
                "match": [{"uri": {"prefix": "/atlas-ui"}}],
                "route": [{"destination": {"host": "atlas-ui", "port": {"number": 80}}, "weight": 100}]
            }]
        }
    })
}

fn destination_rule() -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "dr", "namespace": "atlas"},
        "spec": {
            "host": "nb-rest",
            "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}},
            "subsets": [{"name": "v1", "labels": {"version": "v1"}}]
        }
    })
}

/// Sets the value at a `/`-separated JSON pointer; `null` removes the field.
fn with(mut v: Value, pointer: &str, new: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let obj = v
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {parent}"));
    if new.is_null() {
        obj.remove(key);
    } else {
        obj.insert(key.to_string(), new);
    }
    v
}

/// Exactly one violation, at `path`, whose message contains `needle`.
#[track_caller]
fn assert_one(violations: &[Violation], path: &str, needle: &str) {
    assert_eq!(
        violations.len(),
        1,
        "expected exactly one violation at {path}, got: {violations:#?}"
    );
    assert_eq!(violations[0].path, path, "{}", violations[0]);
    assert!(
        violations[0].message.contains(needle),
        "message of {} lacks {needle:?}",
        violations[0]
    );
}

#[test]
fn validator_reports_istio_schema_violations_with_their_paths() {
    let Some(s) = Schemas::load() else {
        return;
    };
    // The unmodified objects are valid, so each violation below is the mutation's.
    for (kind, obj) in [
        ("Gateway", gateway()),
        ("VirtualService", virtual_service()),
        ("DestinationRule", destination_rule()),
    ] {
        assert_eq!(s.check(kind, &obj), vec![], "{kind} base object");
    }

    // A wrong type: the port number as a string.
    let v = s.check(
        "Gateway",
        &with(gateway(), "/spec/servers/0/port/number", json!("80")),
    );
    assert_one(
        &v,
        "spec.servers[0].port.number",
        "expected integer, found string \"80\"",
    );

    // A missing required field (Server.port requires number, protocol and name).
    let v = s.check(
        "Gateway",
        &with(gateway(), "/spec/servers/0/port/protocol", Value::Null),
    );
    assert_one(
        &v,
        "spec.servers[0].port.protocol",
        "required field is missing",
    );

    // Unknown fields: `subset` for `subsets` in a DestinationRule spec, `matchs` in
    // an http route, `hostt` in a destination.
    let dr = with(destination_rule(), "/spec/subsets", Value::Null);
    let v = s.check(
        "DestinationRule",
        &with(
            dr,
            "/spec/subset",
            json!([{"name": "v1", "labels": {"version": "v1"}}]),
        ),
    );
    assert_one(&v, "spec.subset", "unknown field, did you mean `subsets`?");

    let vs = virtual_service();
    let matches = vs.pointer("/spec/http/0/match").unwrap().clone();
    let vs = with(
        with(vs, "/spec/http/0/match", Value::Null),
        "/spec/http/0/matchs",
        matches,
    );
    let v = s.check("VirtualService", &vs);
    assert_one(
        &v,
        "spec.http[0].matchs",
        "unknown field, did you mean `match`?",
    );

    let vs = with(
        virtual_service(),
        "/spec/http/0/route/0/destination",
        json!({"hostt": "atlas-ui"}),
    );
    let v = s.check("VirtualService", &vs);
    assert_eq!(
        v.iter().map(|x| x.path.as_str()).collect::<Vec<_>>(),
        [
            "spec.http[0].route[0].destination.hostt",
            "spec.http[0].route[0].destination.host"
        ],
        "{v:#?}"
    );

    // A oneOf violation: a StringMatch with both exact and prefix.
    let vs = with(
        virtual_service(),
        "/spec/http/0/match/0/uri",
        json!({"exact": "/a", "prefix": "/a"}),
    );
    let v = s.check("VirtualService", &vs);
    assert_one(
        &v,
        "spec.http[0].match[0].uri",
        "set: exact, prefix; they are mutually exclusive",
    );

    // The same inside a headers map (additionalProperties with a schema).
    let vs = with(
        virtual_service(),
        "/spec/http/0/match/0/headers",
        json!({"x-atlas-version": {"exact": "v2", "regex": "v.*"}}),
    );
    let v = s.check("VirtualService", &vs);
    assert_one(
        &v,
        "spec.http[0].match[0].headers.x-atlas-version",
        "matches 2",
    );

    // An enum violation, and a value above a maximum.
    let v = s.check(
        "DestinationRule",
        &with(
            destination_rule(),
            "/spec/trafficPolicy/tls/mode",
            json!("ISTIO_MUTAL"),
        ),
    );
    assert_one(&v, "spec.trafficPolicy.tls.mode", "is not one of");
    let v = s.check(
        "Gateway",
        &with(
            gateway(),
            "/spec/servers/0/port/number",
            json!(4294967296u64),
        ),
    );
    assert_one(
        &v,
        "spec.servers[0].port.number",
        "greater than the maximum",
    );

    // Labels are a map of strings: a number is caught at its key.
    let v = s.check(
        "DestinationRule",
        &with(
            destination_rule(),
            "/spec/subsets/0/labels/version",
            json!(2),
        ),
    );
    assert_one(
        &v,
        "spec.subsets[0].labels.version",
        "expected string, found integer 2",
    );

    // status preserves unknown fields; an int-or-string accepts both and nothing else.
    let gw = with(
        gateway(),
        "/status",
        json!({"anything": {"goes": [1]}, "observedGeneration": "3"}),
    );
    assert_eq!(s.check("Gateway", &gw), vec![]);
    let gw = with(gateway(), "/status", json!({"observedGeneration": true}));
    let v = s.check("Gateway", &gw);
    assert!(
        !v.is_empty() && v.iter().all(|x| x.path == "status.observedGeneration"),
        "{v:#?}"
    );
}

// ---------------------------------------------------------------------------------
// The validator's semantics on small hand-written schemas (need no Istio file)

fn check(schema: Value, v: Value) -> Vec<Violation> {
    let mut out = Vec::new();
    validate(&schema, &v, "", &mut out);
    out
}

fn paths(v: &[Violation]) -> Vec<&str> {
    v.iter().map(|x| x.path.as_str()).collect()
}

#[test]
fn validator_semantics_on_small_schemas() {
    let obj = json!({
        "type": "object",
        "required": ["a"],
        "properties": {
            "a": {"type": "integer", "minimum": 1, "maximum": 10},
            "b": {"type": "array", "items": {"type": "string", "enum": ["x", "y"]}, "maxItems": 2},
            "m": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "closed": {"type": "object", "properties": {"k": {"type": "string"}}, "additionalProperties": false},
            "open": {"type": "object", "properties": {"k": {"type": "string"}}, "additionalProperties": true},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"k": {"type": "string"}}},
            "ios": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "n": {"type": "number", "nullable": true},
            "s": {"type": "string", "maxLength": 3}
        }
    });
    // Valid.
    let ok = json!({"a": 5, "b": ["x"], "m": {"p": true}, "closed": {"k": "v"},
        "open": {"z": 1}, "free": {"z": [1]}, "ios": "80%", "n": null, "s": "abc"});
    assert_eq!(check(obj.clone(), ok), vec![]);
    assert_eq!(
        check(obj.clone(), json!({"a": 5.0, "ios": 3, "n": 1.5})),
        vec![]
    );

    // Each rule, with its path.
    let v = check(obj.clone(), json!({}));
    assert_eq!(paths(&v), ["a"]);
    let v = check(obj.clone(), json!({"a": 0}));
    assert_eq!(paths(&v), ["a"]);
    assert!(v[0].message.contains("less than the minimum"), "{}", v[0]);
    let v = check(obj.clone(), json!({"a": 2.5}));
    assert!(v[0].message.contains("expected integer"), "{}", v[0]);
    let v = check(obj.clone(), json!({"a": 1, "b": ["x", "z", 3]}));
    assert_eq!(paths(&v), ["b", "b[1]", "b[2]"], "{v:#?}");
    let v = check(obj.clone(), json!({"a": 1, "m": {"p": "yes"}}));
    assert_eq!(paths(&v), ["m.p"]);
    let v = check(obj.clone(), json!({"a": 1, "m": {"a.b/c": 1}}));
    assert_eq!(paths(&v), ["m[\"a.b/c\"]"]);
    let v = check(obj.clone(), json!({"a": 1, "closed": {"k": "v", "kk": 1}}));
    assert_eq!(paths(&v), ["closed.kk"]);
    assert!(
        v[0].message.contains("additionalProperties is false"),
        "{}",
        v[0]
    );
    let v = check(obj.clone(), json!({"a": 1, "free": {"k": 1}}));
    assert_eq!(
        paths(&v),
        ["free.k"],
        "preserve-unknown-fields still checks known fields"
    );
    let v = check(obj.clone(), json!({"a": 1, "ios": 1.5}));
    assert_eq!(paths(&v), ["ios"]);
    let v = check(obj.clone(), json!({"a": 1, "s": "abcd"}));
    assert_eq!(paths(&v), ["s"]);
    let v = check(obj.clone(), json!({"a": null}));
    assert_eq!(paths(&v), ["a"]);
    assert!(v[0].message.contains("not nullable"), "{}", v[0]);
    let v = check(obj.clone(), json!({"a": 1, "typo": 1}));
    assert_eq!(paths(&v), ["typo"]);
    assert!(v[0].message.starts_with("unknown field"), "{}", v[0]);
    let v = check(obj, json!([1]));
    assert_eq!(paths(&v), [""]);
    assert_eq!(v[0].to_string(), "<root>: expected object, found array [1]");

    // Istio's oneOf-with-required pattern: at most one of the fields.
    let one_of = json!({
        "type": "object",
        "properties": {"exact": {"type": "string"}, "prefix": {"type": "string"}},
        "oneOf": [
            {"not": {"anyOf": [{"required": ["exact"]}, {"required": ["prefix"]}]}},
            {"required": ["exact"]},
            {"required": ["prefix"]}
        ]
    });
    assert_eq!(check(one_of.clone(), json!({})), vec![]);
    assert_eq!(check(one_of.clone(), json!({"exact": "a"})), vec![]);
    let v = check(one_of, json!({"exact": "a", "prefix": "b"}));
    assert_eq!(paths(&v), [""]);
    assert!(v[0].message.contains("matches 2"), "{}", v[0]);

    // allOf applies every branch; not rejects a match.
    let all_of =
        json!({"allOf": [{"required": ["a"]}, {"required": ["b"]}], "not": {"required": ["c"]}});
    assert_eq!(paths(&check(all_of.clone(), json!({"a": 1}))), ["b"]);
    let v = check(all_of, json!({"a": 1, "b": 2, "c": 3}));
    assert_eq!(paths(&v), [""]);
    assert!(v[0].message.contains("must not match"), "{}", v[0]);

    // anyOf: none matching is reported once, at the value.
    let any_of = json!({"anyOf": [{"type": "integer"}, {"type": "string"}]});
    assert_eq!(check(any_of.clone(), json!("x")), vec![]);
    let v = check(any_of, json!(true));
    assert_eq!(paths(&v), [""]);
    assert!(v[0].message.contains("anyOf"), "{}", v[0]);
}

// ---------------------------------------------------------------------------------
// meshcheck's tree of Istio's API (fixtures/istio_api.rs) against Istio's schemas

use meshcheck::fixtures::istio_api::{spec_of, Node};
use std::collections::BTreeSet;

/// Every field position under `schema` (the spec's): `spec.http[].route[].weight`,
/// `[]` for a list item, `{}` for a map value that is itself a message.
fn schema_fields(schema: &Value, path: &str, out: &mut BTreeSet<String>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            let p = format!("{path}.{k}");
            out.insert(p.clone());
            schema_fields(v, &p, out);
        }
    }
    if let Some(items) = schema.get("items") {
        schema_fields(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        schema_fields(ap, &format!("{path}{{}}"), out);
    }
    for alt in ["oneOf", "anyOf", "allOf"] {
        for s in schema
            .get(alt)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            schema_fields(s, path, out);
        }
    }
}

/// The same positions in meshcheck's tree.
fn tree_fields(node: &Node, path: &str, out: &mut BTreeSet<String>) {
    match node {
        Node::Scalar => {}
        Node::Object(fields) => {
            for (k, child) in fields.iter() {
                let p = format!("{path}.{k}");
                out.insert(p.clone());
                tree_fields(child, &p, out);
            }
        }
        Node::List(item) => tree_fields(item, &format!("{path}[]"), out),
        Node::Map(value) => tree_fields(value, &format!("{path}{{}}"), out),
    }
}

fn spec_schema<'a>(schemas: &'a Schemas, kind: &str) -> &'a Value {
    &schemas.by_kind[kind]["properties"]["spec"]
}

#[test]
fn meshchecks_tree_of_istios_api_is_istios_schema_both_ways() {
    let Some(schemas) = Schemas::load() else {
        return;
    };
    for kind in KINDS {
        let mut istio = BTreeSet::new();
        schema_fields(spec_schema(&schemas, kind), "spec", &mut istio);
        let mut mine = BTreeSet::new();
        tree_fields(spec_of(kind).unwrap(), "spec", &mut mine);
        let missing: Vec<_> = istio.difference(&mine).collect();
        let extra: Vec<_> = mine.difference(&istio).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{kind}: Istio defines, meshcheck's tree lacks: {missing:#?}\nmeshcheck's tree has, Istio does not define: {extra:#?}"
        );
    }
}

/// A value the schema accepts with only its required fields (enums take their first
/// value).
fn minimal(schema: &Value) -> Value {
    if let Some(e) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return e.clone();
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        return json!(1);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let mut m = Map::new();
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let k = r.as_str().unwrap();
                m.insert(k.to_string(), minimal(&schema["properties"][k]));
            }
            Value::Object(m)
        }
        Some("array") => match schema.get("items") {
            Some(items) if schema.get("minItems").is_some() => json!([minimal(items)]),
            _ => json!([]),
        },
        Some("integer") | Some("number") => json!(1),
        Some("boolean") => json!(false),
        _ => json!("a"),
    }
}

/// Every message position under `schema` as (the path to it in a generated object,
/// the object holding a field `meshcheckTypo` there); lists get one item, maps the
/// key `k`, and every message on the way its required fields.
fn typo_objects(schema: &Value, at: &str, value: Value, out: &mut Vec<(String, Value)>) {
    // Every case under the child position `child_at` (schema `child`), each placed into
    // a copy of this position's value by `put`.
    let mut descend = |child: &Value, child_at: String, put: &dyn Fn(&mut Value, Value)| {
        let mut inner = Vec::new();
        typo_objects(child, &child_at, minimal(child), &mut inner);
        for (p, c) in inner {
            let mut v = value.clone();
            put(&mut v, c);
            out.push((p, v));
        }
    };
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, child) in props {
            let nested = child.get("properties").is_some()
                || child.get("items").is_some()
                || child
                    .get("additionalProperties")
                    .is_some_and(Value::is_object);
            if nested {
                descend(child, format!("{at}.{k}"), &|v, c| v[k] = c);
            }
        }
    }
    if let Some(items) = schema.get("items") {
        descend(items, format!("{at}[0]"), &|v, c| *v = json!([c]));
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        descend(ap, format!("{at}.k"), &|v, c| *v = json!({ "k": c }));
    }
    if schema.get("properties").is_some() {
        let mut with_typo = value;
        with_typo["meshcheckTypo"] = json!("x");
        out.push((format!("{at}.meshcheckTypo"), with_typo));
    }
}

/// A StringMatch (exact, prefix or regex): meshcheck reads it strictly, so a field
/// beside them is bad input naming the file and field (exit 2), not a warning.
fn in_string_match(schemas: &Schemas, kind: &str, path: &str) -> bool {
    let parent = path.strip_suffix(".meshcheckTypo").unwrap_or(path);
    let mut s = spec_schema(schemas, kind);
    for seg in parent
        .trim_start_matches("spec")
        .split('.')
        .filter(|s| !s.is_empty())
    {
        let (name, indexed) = match seg.strip_suffix("[0]") {
            Some(n) => (n, true),
            None => (seg, false),
        };
        s = if name == "k" && s.get("properties").is_none() {
            &s["additionalProperties"]
        } else {
            &s["properties"][name]
        };
        if indexed {
            s = &s["items"];
        }
    }
    let keys: BTreeSet<&str> = s
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys == BTreeSet::from(["exact", "prefix", "regex"])
}

#[test]
fn an_unknown_field_at_any_depth_of_any_istio_kind_is_mc301() {
    let Some(schemas) = Schemas::load() else {
        return;
    };
    let suite =
        meshcheck::suite::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("suites/ingress.yaml"))
            .unwrap();
    let mut wrong = Vec::new();
    let mut judged = 0;
    for kind in KINDS {
        let mut cases = Vec::new();
        let spec_schema = spec_schema(&schemas, kind);
        typo_objects(spec_schema, "spec", minimal(spec_schema), &mut cases);
        for (path, spec) in cases {
            let dir = tempfile::tempdir().unwrap();
            let doc = json!({"apiVersion": API_VERSION, "kind": kind,
                             "metadata": {"name": "x", "namespace": "atlas"}, "spec": spec});
            std::fs::write(
                dir.path().join("x.yaml"),
                serde_json::to_string(&doc).unwrap(),
            )
            .unwrap();
            let fx = match load_dir(dir.path()) {
                Ok(fx) => fx,
                Err(e) if in_string_match(&schemas, kind, &path) => {
                    let e = e.to_string();
                    if !(e.contains("x.yaml") && e.contains("meshcheckTypo")) {
                        wrong.push(format!("{kind} {path}: bad input without its field: {e}"));
                    }
                    continue;
                }
                Err(e) => {
                    wrong.push(format!("{kind} {path}: does not load: {e}"));
                    continue;
                }
            };
            judged += 1;
            let mesh = meshcheck::istio::Mesh::build(&fx);
            let findings = meshcheck::analysis::analyze(&fx, &mesh, &suite);
            let about = |code: &str| {
                findings
                    .iter()
                    .any(|f| f.code == code && f.message.contains(&format!("`{path}`")))
            };
            if !about("MC301") || about("MC302") {
                let said: Vec<String> = findings
                    .iter()
                    .filter(|f| f.code.starts_with("MC30"))
                    .map(|f| format!("{} {}", f.code, f.message))
                    .collect();
                wrong.push(format!("{kind} {path}: {said:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(judged > 100, "only {judged} positions judged");
}

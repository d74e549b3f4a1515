//! `attack` checks: one path the gateway must keep closed, spelled every way a client
//! can spell it, each spelling its own http check (`<group>::<name>::<label>`),
//! expanded when the suite loads.
//!
//! Each spelling is one that Envoy's path handling, as Istio's meshConfig
//! `pathNormalization` sets it up, treats differently (Istio's "Authorization Policy
//! Normalization" reference and "security best practices"; Envoy
//! HttpConnectionManager `normalize_path`, `merge_slashes`,
//! `path_with_escaped_slashes_action`):
//!
//! | option | Envoy | normalizes |
//! |---|---|---|
//! | `NONE` | nothing | nothing |
//! | `BASE` (the default) | `normalize_path` (RFC 3986 via Chromium's URL canonicalizer) | dot segments (also `%2e`), escaped unreserved characters (`%61` -> `a`), `\` -> `/` |
//! | `MERGE_SLASHES` | + `merge_slashes` | `//` -> `/` |
//! | `DECODE_AND_MERGE_SLASHES` | + `path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD` | `%2F`, `%5C` decoded first |
//!
//! The gateway's RBAC filter, its routes and the backend all see the normalized path, so
//! a spelling the setting does not normalize is matched by the policy as written while
//! a backend may read it as the closed path. [`SPELLINGS`] says, for each spelling, which
//! setting turns it back into the path as written; some spellings no setting
//! normalizes (`upper-case`, `trailing-slash`, `semicolon`): only the policy (a prefix,
//! an ALLOW list) or the routes keep them closed.
//!
//! The path must be written plainly (`/admin/users`: no dot segments, no `//`, no
//! `%`, `\`, `;`, `?`, `#`): the spellings are made from it. Spellings that would equal
//! the path as written, or need what it lacks (a second segment for the slash
//! spellings, a letter for the case ones), are not generated; asking for one by name
//! is a load error.

use super::RequestSpec;

/// A spelling: its label, what it makes of `/admin/users`, and what turns it back
/// into the path as written at the gateway (which pathNormalization setting), if
/// anything does.
pub struct Spelling {
    pub label: &'static str,
    pub example: &'static str,
    pub note: &'static str,
    make: fn(&Parts) -> Option<String>,
}

/// Every spelling, in the order the variants are generated.
pub const SPELLINGS: &[Spelling] = &[
    Spelling {
        label: "as-written",
        example: "/admin/users",
        note: "the path itself: the policy as written",
        make: |p| Some(p.path.clone()),
    },
    Spelling {
        label: "dot-segment",
        example: "/./admin/users",
        note: "pathNormalization BASE and stricter resolve it (normalize_path: RFC 3986 dot segments)",
        make: |p| Some(format!("/.{}", p.path)),
    },
    Spelling {
        label: "dot-dot-segment",
        example: "/x/../admin/users",
        note: "pathNormalization BASE and stricter resolve it (normalize_path: RFC 3986 dot segments)",
        make: |p| Some(format!("/x/..{}", p.path)),
    },
    Spelling {
        label: "encoded-dot",
        example: "/%2e/admin/users",
        note: "BASE and stricter resolve it (normalize_path reads %2e as a dot)",
        make: |p| Some(format!("/%2e{}", p.path)),
    },
    Spelling {
        label: "percent-encoded-letter",
        example: "/%61dmin/users",
        note: "BASE and stricter decode it (normalize_path decodes escaped unreserved characters)",
        make: |p| {
            let i = p.first.find(|c: char| c.is_ascii_alphabetic())?;
            let c = p.first.as_bytes()[i];
            Some(format!(
                "/{}%{c:02X}{}{}",
                &p.first[..i],
                &p.first[i + 1..],
                p.rest
            ))
        },
    },
    Spelling {
        label: "backslash",
        example: "/admin\\users",
        note: "BASE and stricter read \\ as / (normalize_path)",
        make: |p| p.inner_slash("\\"),
    },
    Spelling {
        label: "double-slash",
        example: "//admin/users",
        note: "MERGE_SLASHES and stricter merge it (merge_slashes)",
        make: |p| Some(format!("/{}", p.path)),
    },
    Spelling {
        label: "encoded-slash",
        example: "/admin%2Fusers",
        note: "only DECODE_AND_MERGE_SLASHES decodes it (path_with_escaped_slashes_action UNESCAPE_AND_FORWARD)",
        make: |p| p.inner_slash("%2F"),
    },
    Spelling {
        label: "encoded-backslash",
        example: "/admin%5Cusers",
        note: "only DECODE_AND_MERGE_SLASHES decodes it (path_with_escaped_slashes_action UNESCAPE_AND_FORWARD)",
        make: |p| p.inner_slash("%5C"),
    },
    Spelling {
        label: "upper-case",
        example: "/ADMIN/users",
        note: "no setting folds case: only case-sensitive routes and policies keep it from a case-insensitive backend",
        make: |p| {
            let up = p.first.to_ascii_uppercase();
            (up != p.first).then(|| format!("/{up}{}", p.rest))
        },
    },
    Spelling {
        label: "trailing-slash",
        example: "/admin/users/",
        note: "no setting removes it: an exact policy path misses it (write `/admin/users*`)",
        make: |p| (!p.path.ends_with('/')).then(|| format!("{}/", p.path)),
    },
    Spelling {
        label: "no-trailing-slash",
        example: "/admin/ -> /admin",
        note: "no setting adds it: an exact policy path misses it",
        make: |p| {
            let t = p.path.strip_suffix('/')?;
            (!t.is_empty()).then(|| t.to_string())
        },
    },
    Spelling {
        label: "semicolon",
        example: "/admin;x/users",
        note: "no setting strips path parameters; backends such as Tomcat and Spring do",
        make: |p| Some(format!("/{};x{}", p.first, p.rest)),
    },
    Spelling {
        label: "fragment",
        example: "/admin/users#x",
        note: "Envoy strips it before any filter (Istio's bootstrap; Envoy's own default answers 400)",
        make: |p| Some(format!("{}#x", p.path)),
    },
    Spelling {
        label: "inner-dot-segment",
        example: "/admin/./users",
        note: "BASE and stricter resolve it; under NONE a route on the first segment still takes it past a DENY on the whole path",
        make: |p| p.inner_segment("/./"),
    },
    Spelling {
        label: "inner-dot-dot-segment",
        example: "/admin/x/../users",
        note: "BASE and stricter resolve it; under NONE a route on the first segment still takes it past a DENY on the whole path",
        make: |p| p.inner_segment("/x/../"),
    },
    Spelling {
        label: "inner-double-slash",
        example: "/admin//users",
        note: "MERGE_SLASHES and stricter merge it; under BASE a route on the first segment takes it past a DENY on the whole path",
        make: |p| p.inner_segment("//"),
    },
];

/// A path taken apart for the spellings: `/first/rest...`.
struct Parts {
    /// The path as written.
    path: String,
    /// Its first segment (`admin`).
    first: String,
    /// What follows it (`/users`, `/` for `/admin/`, empty for `/admin`).
    rest: String,
}

impl Parts {
    /// The path with the slash after the first segment written as `with`; None when
    /// there is none (`/admin`).
    fn inner_slash(&self, with: &str) -> Option<String> {
        let after = self.rest.strip_prefix('/')?;
        Some(format!("/{}{with}{after}", self.first))
    }

    /// The path with the slash after the first segment written as `with`, when a
    /// second segment follows it.
    fn inner_segment(&self, with: &str) -> Option<String> {
        let after = self.rest.strip_prefix('/').filter(|a| !a.is_empty())?;
        Some(format!("/{}{with}{after}", self.first))
    }
}

/// One spelling of the path: its label and the path as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub label: &'static str,
    pub path: String,
}

/// Characters a plain path segment may hold (RFC 3986 pchar without `%` and `;`,
/// which the spellings use).
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,=:@".contains(c)
}

/// Why `path` is not a plain path the spellings can be made from, or its parts.
fn parts(path: &str) -> Result<Parts, String> {
    if path.is_empty() {
        return Err(
            "attack.request.path is empty: give the path to keep closed, e.g. /admin".into(),
        );
    }
    let Some(body) = path.strip_prefix('/') else {
        return Err(format!("attack.request.path {path:?} must start with /"));
    };
    if body.is_empty() {
        return Err(format!(
            "attack.request.path {path:?}: name the path to keep closed (at least one segment, e.g. /admin)"
        ));
    }
    let segments: Vec<&str> = body.split('/').collect();
    let last = segments.len() - 1;
    for (i, s) in segments.iter().enumerate() {
        if s.is_empty() && i != last {
            return Err(format!(
                "attack.request.path {path:?}: write it plainly, without `//` (double-slash is one of the spellings)"
            ));
        }
        if *s == "." || *s == ".." {
            return Err(format!(
                "attack.request.path {path:?}: write it plainly, without dot segments (dot-segment and dot-dot-segment are spellings)"
            ));
        }
        if let Some(c) = s.chars().find(|c| !plain(*c)) {
            let why = match c {
                '?' => "a query goes in `query`",
                '#' => "fragment is one of the spellings",
                '%' | '\\' | ';' => "the spellings add it",
                _ => "not a character of a path segment (RFC 3986)",
            };
            return Err(format!(
                "attack.request.path {path:?}: write it plainly, {c:?}: {why}"
            ));
        }
    }
    let first = segments[0].to_string();
    Ok(Parts {
        path: path.to_string(),
        rest: path[1 + first.len()..].to_string(),
        first,
    })
}

/// Every spelling of `path` that differs from the others, in [`SPELLINGS`] order.
pub fn variants(path: &str) -> Result<Vec<Variant>, String> {
    let p = parts(path)?;
    let mut out: Vec<Variant> = Vec::new();
    for s in SPELLINGS {
        if let Some(v) = (s.make)(&p) {
            if !out.iter().any(|o| o.path == v) {
                out.push(Variant {
                    label: s.label,
                    path: v,
                });
            }
        }
    }
    Ok(out)
}

/// The variants `wanted` names (`all`, or labels; empty: all), in [`SPELLINGS`] order.
/// Err: the path is not plain, a label is unknown, or names a spelling this path has
/// none of.
pub fn select(path: &str, wanted: &[String]) -> Result<Vec<Variant>, String> {
    let all = variants(path)?;
    if wanted.is_empty() || wanted.iter().any(|w| w == "all") {
        if wanted.len() > 1 {
            return Err("attack.variants: `all` stands alone".into());
        }
        return Ok(all);
    }
    let mut seen = std::collections::BTreeSet::new();
    for w in wanted {
        if !SPELLINGS.iter().any(|s| s.label == w) {
            return Err(format!(
                "attack.variants: unknown variant {w:?} (one of all, {})",
                SPELLINGS
                    .iter()
                    .map(|s| s.label)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !seen.insert(w.as_str()) {
            return Err(format!("attack.variants: {w} is listed twice"));
        }
        if !all.iter().any(|v| v.label == w) {
            return Err(format!(
                "attack.variants: {path} has no {w} spelling (it needs {})",
                needs(w)
            ));
        }
    }
    Ok(all
        .into_iter()
        .filter(|v| wanted.iter().any(|w| w == v.label))
        .collect())
}

/// What a path needs for the spelling `label` to exist.
fn needs(label: &str) -> &'static str {
    match label {
        "backslash" | "encoded-slash" | "encoded-backslash" => "a second segment, /a/b",
        "percent-encoded-letter" => "a letter in the first segment",
        "upper-case" => "a lower-case letter in the first segment",
        "trailing-slash" => "a path without a trailing slash",
        "no-trailing-slash" => "a path with a trailing slash",
        _ => "a different path",
    }
}

/// The request of one variant: `req` with the variant's path, sent as written. A
/// fragment goes after the query, so for `fragment` the query is written into the
/// path first.
pub fn request(req: &RequestSpec, v: &Variant) -> RequestSpec {
    let mut out = req.clone();
    match v.path.strip_suffix("#x") {
        Some(path) if v.label == "fragment" => {
            out.path = path.to_string();
            out.path = format!("{}#x", out.path_and_query());
            out.query.clear();
        }
        _ => out.path = v.path.clone(),
    }
    out
}

/// What the variant tests, for the check's description.
pub fn describe(v: &Variant) -> String {
    let s = SPELLINGS
        .iter()
        .find(|s| s.label == v.label)
        .expect("a variant's label is one of SPELLINGS");
    format!("{} spelling {}: {}", v.label, v.path, s.note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(path: &str) -> Vec<(&'static str, String)> {
        variants(path)
            .unwrap()
            .into_iter()
            .map(|v| (v.label, v.path))
            .collect()
    }

    #[test]
    fn a_two_segment_path_gets_every_spelling_but_no_trailing_slash() {
        let want: Vec<(&str, &str)> = vec![
            ("as-written", "/admin/users"),
            ("dot-segment", "/./admin/users"),
            ("dot-dot-segment", "/x/../admin/users"),
            ("encoded-dot", "/%2e/admin/users"),
            ("percent-encoded-letter", "/%61dmin/users"),
            ("backslash", "/admin\\users"),
            ("double-slash", "//admin/users"),
            ("encoded-slash", "/admin%2Fusers"),
            ("encoded-backslash", "/admin%5Cusers"),
            ("upper-case", "/ADMIN/users"),
            ("trailing-slash", "/admin/users/"),
            ("semicolon", "/admin;x/users"),
            ("fragment", "/admin/users#x"),
            ("inner-dot-segment", "/admin/./users"),
            ("inner-dot-dot-segment", "/admin/x/../users"),
            ("inner-double-slash", "/admin//users"),
        ];
        let got = pairs("/admin/users");
        let got: Vec<(&str, &str)> = got.iter().map(|(l, p)| (*l, p.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn each_spellings_example_is_what_it_makes_of_admin_users() {
        let got = variants("/admin/users").unwrap();
        for s in SPELLINGS.iter().filter(|s| s.label != "no-trailing-slash") {
            let v = got.iter().find(|v| v.label == s.label).unwrap();
            assert_eq!(v.path, s.example, "{}", s.label);
        }
        let v = &variants("/admin/").unwrap();
        let v = v.iter().find(|v| v.label == "no-trailing-slash").unwrap();
        assert_eq!(format!("/admin/ -> {}", v.path), SPELLINGS[11].example);
    }

    #[test]
    fn a_one_segment_path_has_no_slash_spellings() {
        let got = pairs("/admin");
        let labels: Vec<&str> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(
            labels,
            [
                "as-written",
                "dot-segment",
                "dot-dot-segment",
                "encoded-dot",
                "percent-encoded-letter",
                "double-slash",
                "upper-case",
                "trailing-slash",
                "semicolon",
                "fragment"
            ]
        );
        assert!(got.contains(&("percent-encoded-letter", "/%61dmin".into())));
        assert!(got.contains(&("semicolon", "/admin;x".into())));
        assert!(got.contains(&("double-slash", "//admin".into())));
    }

    #[test]
    fn a_trailing_slash_is_dropped_instead_of_added() {
        let got = pairs("/admin/");
        assert!(
            got.contains(&("no-trailing-slash", "/admin".into())),
            "{got:?}"
        );
        assert!(!got.iter().any(|(l, _)| *l == "trailing-slash"));
        // The slash after the first segment is the trailing one.
        assert!(got.contains(&("encoded-slash", "/admin%2F".into())));
        assert!(got.contains(&("semicolon", "/admin;x/".into())));
    }

    #[test]
    fn spellings_that_change_nothing_are_not_generated() {
        // No letter in the first segment: no case or letter spelling.
        let got = pairs("/v1/x");
        assert!(got.contains(&("percent-encoded-letter", "/%761/x".into())));
        let got = pairs("/123/x");
        assert!(!got
            .iter()
            .any(|(l, _)| *l == "upper-case" || *l == "percent-encoded-letter"));
        // Already upper case.
        assert!(!pairs("/ADMIN").iter().any(|(l, _)| *l == "upper-case"));
        // The first letter is encoded wherever it is, upper-case hex.
        assert!(pairs("/_zz")
            .iter()
            .any(|(l, p)| *l == "percent-encoded-letter" && p == "/_%7Az"));
    }

    #[test]
    fn a_subset_is_taken_in_label_order_and_bad_names_are_refused() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = select("/admin/users", &w(&["fragment", "dot-segment"])).unwrap();
        let labels: Vec<&str> = got.iter().map(|v| v.label).collect();
        assert_eq!(labels, ["dot-segment", "fragment"]);
        assert_eq!(select("/admin/users", &w(&["all"])).unwrap().len(), 16);
        assert_eq!(select("/admin/users", &[]).unwrap().len(), 16);
        let e = select("/admin/users", &w(&["dot-segmnt"])).unwrap_err();
        assert!(
            e.starts_with("attack.variants: unknown variant \"dot-segmnt\" (one of all, as-written, dot-segment,"),
            "{e}"
        );
        let e = select("/admin", &w(&["encoded-slash"])).unwrap_err();
        assert_eq!(
            e,
            "attack.variants: /admin has no encoded-slash spelling (it needs a second segment, /a/b)"
        );
        let e = select("/admin", &w(&["all", "fragment"])).unwrap_err();
        assert!(e.contains("`all` stands alone"), "{e}");
        let e = select("/admin", &w(&["fragment", "fragment"])).unwrap_err();
        assert!(e.contains("fragment is listed twice"), "{e}");
    }

    #[test]
    fn only_plain_paths_are_spelled() {
        for (path, says) in [
            ("", "attack.request.path is empty"),
            ("/", "at least one segment"),
            ("admin", "must start with /"),
            ("/a//b", "without `//`"),
            ("/a/../b", "without dot segments"),
            ("/a/./b", "without dot segments"),
            ("/a%2Fb", "'%': the spellings add it"),
            ("/a;b", "';': the spellings add it"),
            ("/a?b=1", "'?': a query goes in `query`"),
            ("/a#b", "'#': fragment is one of the spellings"),
            ("/a b", "' ': not a character of a path segment"),
        ] {
            let e = variants(path).err().unwrap_or_default();
            assert!(e.contains(says), "{path:?}: {e}");
        }
        assert!(variants("/a/b.json").is_ok());
        assert!(variants("/api/v1/users/").is_ok());
    }

    #[test]
    fn the_fragment_goes_after_the_query() {
        let req = RequestSpec {
            path: "/admin/users".into(),
            query: [("a".to_string(), "1 2".to_string())].into(),
            ..Default::default()
        };
        let vs = variants(&req.path).unwrap();
        let frag = vs.iter().find(|v| v.label == "fragment").unwrap();
        let r = request(&req, frag);
        assert_eq!(r.path, "/admin/users?a=1+2#x");
        assert!(r.query.is_empty());
        assert_eq!(r.path_and_query(), "/admin/users?a=1+2#x");
        let dot = vs.iter().find(|v| v.label == "dot-segment").unwrap();
        let r = request(&req, dot);
        assert_eq!(r.path_and_query(), "/./admin/users?a=1+2");
    }
}

//! Envoy's URI template matcher (envoy.path.match.uri_template, as Istio's `{*}` and
//! `{**}` path templates become: pilot/pkg/security/authz/matcher/template.go): the
//! template turns into a regular expression segment by segment, `*` one path segment
//! and `**` any rest of the path, over RFC 3986 path characters (Envoy
//! source/extensions/path/uri_template_lib/uri_template_internal.cc, kPathGlob and
//! kTextGlob), the whole path matched.

/// One segment: unreserved, pct-encoded, sub-delims, `:` and `@`.
const PATH_GLOB: &str = "[a-zA-Z0-9-._~%!$&'()+,;:@=]+";
/// Any rest of the path, slashes included.
const TEXT_GLOB: &str = "[a-zA-Z0-9-._~%!$&'()+,;:@=/]*";

/// The regular expression Envoy makes of `template`.
pub fn regex_of(template: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "*" => PATH_GLOB.to_string(),
            "**" => TEXT_GLOB.to_string(),
            lit => regex::escape(lit),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether `path` (no query) matches `template`.
pub fn matches(template: &str, path: &str) -> bool {
    regex::Regex::new(&format!("^(?:{})$", regex_of(template)))
        .map(|re| re.is_match(path))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn one_segment_and_any_rest() {
        assert!(matches("/a/*/c", "/a/b/c"));
        assert!(!matches("/a/*/c", "/a/b/x/c"));
        assert!(!matches("/a/*/c", "/a//c"));
        assert!(matches("/a/**", "/a/b/c/d"));
        assert!(matches("/a/**/secret", "/a/b/c/secret"));
        assert!(!matches("/a/**/secret", "/a/b/c/public"));
        assert!(!matches("/a/*", "/b/x"));
    }
}

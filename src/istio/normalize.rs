//! The request path as Envoy's connection manager normalizes it before any filter or
//! route sees it (Envoy source/common/http/conn_manager_utility.cc
//! maybeNormalizePath: escaped slashes, then `normalize_path`, RFC 3986 through
//! Chromium's path canonicalizer, source/common/chromium_url/url_canon_path.cc, then
//! `merge_slashes`), under Istio's meshConfig pathNormalization
//! (pilot/pkg/networking/core/listener_builder.go buildHTTPConnectionManager: DEFAULT
//! and BASE are normalize_path; MERGE_SLASHES adds merge_slashes;
//! DECODE_AND_MERGE_SLASHES also unescapes %2F and %5C; NONE leaves the path alone).

/// meshConfig pathNormalization.normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathNormalization {
    None,
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    /// The meshConfig spelling (`DEFAULT` is BASE).
    pub fn parse(s: &str) -> Option<PathNormalization> {
        Some(match s {
            "NONE" => PathNormalization::None,
            "DEFAULT" | "BASE" => PathNormalization::Base,
            "MERGE_SLASHES" => PathNormalization::MergeSlashes,
            "DECODE_AND_MERGE_SLASHES" => PathNormalization::DecodeAndMergeSlashes,
            _ => return None,
        })
    }

    pub fn normalize_path(self) -> bool {
        self != PathNormalization::None
    }
    pub fn merge_slashes(self) -> bool {
        matches!(
            self,
            PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
        )
    }
}

/// `path_and_query` as the filters and routes see it. Envoy drops a fragment in every
/// mode (its HTTP/1 codec; `#` never reaches a filter).
pub fn normalize(path_and_query: &str, mode: PathNormalization) -> String {
    let path_and_query = path_and_query
        .split_once('#')
        .map_or(path_and_query, |(p, _)| p);
    let (path, rest) = match path_and_query.find('?') {
        Some(i) => path_and_query.split_at(i),
        None => (path_and_query, ""),
    };
    let mut p = path.to_string();
    if mode == PathNormalization::DecodeAndMergeSlashes {
        p = unescape_slashes(&p);
    }
    if mode.normalize_path() {
        p = canonical_path(&p);
    }
    if mode.merge_slashes() {
        p = merge_slashes(&p);
    }
    p + rest
}

/// `%2F`/`%2f` to `/` and `%5C`/`%5c` to `\` (UNESCAPE_AND_FORWARD).
fn unescape_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    let mut i = 0;
    let b = p.as_bytes();
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = &p[i + 1..i + 3];
            match hex.to_ascii_uppercase().as_str() {
                "2F" => {
                    out.push('/');
                    i += 3;
                    continue;
                }
                "5C" => {
                    out.push('\\');
                    i += 3;
                    continue;
                }
                _ => {}
            }
        }
        let c = p[i..].chars().next().unwrap_or('\0');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

fn merge_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// RFC 3986 unreserved characters: Chromium unescapes them in paths.
fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Characters Chromium's path canonicalizer escapes (url_canon_path.cc
/// kPathCharLookup ESCAPE): controls, space, `"`, `<`, `>`, `` ` ``, `{`, `}`, DEL
/// and non-ASCII bytes.
fn escaped(c: u8) -> bool {
    !(0x20..0x7f).contains(&c) || matches!(c, b' ' | b'"' | b'<' | b'>' | b'`' | b'{' | b'}')
}

/// Chromium's CanonicalizePath as Envoy uses it: unreserved escapes decoded, other
/// escapes kept as written, a backslash made a slash, characters that must be escaped
/// escaped, and `.` and `..` segments (also spelled `%2e`) resolved. The tests hold
/// what Envoy 1.40 answered for each spelling, in each mode (local replies echoing
/// `%REQ(:PATH)%`).
pub fn canonical_path(p: &str) -> String {
    let b = p.as_bytes();
    let mut text = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|x| (*x as char).to_digit(16)),
                b.get(i + 2).and_then(|x| (*x as char).to_digit(16)),
            ) {
                let v = (h * 16 + l) as u8;
                if unreserved(v) {
                    text.push(v as char);
                } else {
                    text.push_str(&p[i..i + 3]);
                }
                i += 3;
                continue;
            }
        }
        if c == b'\\' {
            // Chromium's canonicalizer takes a backslash for a slash.
            text.push('/');
        } else if escaped(c) {
            text.push_str(&format!("%{c:02X}"));
        } else {
            text.push(c as char);
        }
        i += 1;
    }
    remove_dot_segments(&text)
}

/// RFC 3986 5.2.4, as Chromium applies it to an absolute path.
fn remove_dot_segments(p: &str) -> String {
    if !p.starts_with('/') {
        return p.to_string();
    }
    let segments: Vec<&str> = p[1..].split('/').collect();
    let mut out: Vec<&str> = Vec::new();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::{normalize, PathNormalization::*};

    #[test]
    fn base_resolves_dots_and_unreserved_escapes_only() {
        assert_eq!(normalize("/./admin", Base), "/admin");
        assert_eq!(normalize("/a/../admin", Base), "/admin");
        assert_eq!(normalize("/%2e/admin", Base), "/admin");
        assert_eq!(normalize("/%61dmin?x=/../", Base), "/admin?x=/../");
        assert_eq!(normalize("//admin", Base), "//admin");
        assert_eq!(normalize("/admin%2Fx", Base), "/admin%2Fx");
        assert_eq!(normalize("/a/b/..", Base), "/a/");
        assert_eq!(normalize("/..", Base), "/");
        assert_eq!(normalize("/ADMIN", Base), "/ADMIN");
        assert_eq!(normalize("/%2E%2E/admin", Base), "/admin");
        assert_eq!(normalize("/admin%5Cx", Base), "/admin%5Cx");
        assert_eq!(normalize("/a\\admin", Base), "/a/admin");
        assert_eq!(normalize("/adm%69n", Base), "/admin");
        assert_eq!(normalize("/admin/.", Base), "/admin/");
        assert_eq!(normalize("/%7Eadmin", Base), "/~admin");
        assert_eq!(normalize("/a%20b", Base), "/a%20b");
        assert_eq!(normalize("/a%zz", Base), "/a%zz");
        assert_eq!(normalize("/admin;x", Base), "/admin;x");
        assert_eq!(normalize("/admin#x", Base), "/admin");
    }

    #[test]
    fn none_leaves_the_path_and_merge_modes_merge() {
        assert_eq!(normalize("/./admin", None), "/./admin");
        assert_eq!(normalize("//admin", MergeSlashes), "/admin");
        assert_eq!(normalize("/admin%2Fx", MergeSlashes), "/admin%2Fx");
        assert_eq!(
            normalize("/x%2F%2Fadmin", DecodeAndMergeSlashes),
            "/x/admin"
        );
    }
}

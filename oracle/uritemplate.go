package main

// Envoy's URI template path matcher (envoy.path.match.uri_template), which istiod
// uses for AuthorizationPolicy paths with `{*}` / `{**}` (translated to `*` / `**`:
// pilot/pkg/security/authz/matcher/template.go). The template is parsed and turned
// into a regex as envoy/source/extensions/path/uri_template_lib/uri_template_internal.cc
// does (parseURLPatternSyntax, toRegexPattern): `/`-separated segments, each a literal,
// `*` (one segment: [pchar]+), `**` (any rest: [pchar/]*), or a variable `{name}` (as
// `*`) / `{name=seg/seg...}`; a trailing `/` is an empty last segment; a literal right
// after an operator or variable (no `/`) is a suffix and must end the template. The
// match is RE2 FullMatch over the path without query (uri_template_match.cc).

import (
	"errors"
	"regexp"
	"strings"
)

const (
	// uriLiteralChars: RFC 3986 pchar without `*` and `=` (kLiteral).
	uriLiteralChars = `a-zA-Z0-9\-._~%!$&'()+,;:@`
	uriPathGlob     = `[` + uriLiteralChars + `]+`
	uriTextGlob     = `[` + uriLiteralChars + `/]*`
	// Envoy's limits (kPatternMatchingMaxVariablesPerUrl, ...VariableNameLen).
	uriMaxVariables   = 5
	uriMaxVariableLen = 16
)

var (
	uriPrintable    = regexp.MustCompile(`^/[[:graph:]]*$`)
	uriLiteral      = regexp.MustCompile(`^[` + uriLiteralChars + `]+$`)
	uriVariableName = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]*$`)
)

// uriTemplate is a parsed template: its segments' regexes, the globs in order (for
// the "no glob after **" rule) and the variable names.
type uriTemplate struct {
	segments []string
	suffix   string
	globs    []string // "*" or "**", in order, implicit variable globs included
	vars     []string
}

// uriTemplateRegexp compiles an Envoy path template, or says why Envoy rejects it.
func uriTemplateRegexp(tmpl string) (*regexp.Regexp, error) {
	t, err := parseURITemplate(tmpl)
	if err != nil {
		return nil, err
	}
	if err := t.validate(); err != nil {
		return nil, err
	}
	return regexp.Compile("^/" + strings.Join(t.segments, "/") + regexp.QuoteMeta(t.suffix) + "$")
}

func parseURITemplate(tmpl string) (*uriTemplate, error) {
	if !uriPrintable.MatchString(tmpl) {
		return nil, errors.New("invalid pattern")
	}
	t := &uriTemplate{}
	rest := tmpl[1:]
	for rest != "" {
		seg, after, err := t.consumeSegment(rest)
		if err != nil {
			return nil, err
		}
		t.segments = append(t.segments, seg)
		rest = after
		if rest == "" {
			break
		}
		if rest == "/" {
			t.segments = append(t.segments, "") // a trailing '/'
			break
		}
		if rest[0] == '/' {
			rest = rest[1:]
			continue
		}
		// Not followed by '/': a suffix, which must end the template.
		lit, after, err := consumeURILiteral(rest)
		if err != nil {
			return nil, err
		}
		if after != "" {
			return nil, errors.New("prefix match not supported")
		}
		t.suffix = lit
		break
	}
	return t, nil
}

// consumeSegment reads one segment (operator, variable or literal) and returns its
// regex and the rest of the template.
func (t *uriTemplate) consumeSegment(s string) (string, string, error) {
	switch s[0] {
	case '*':
		op, rest := consumeURIOperator(s)
		t.globs = append(t.globs, op)
		return uriGlobRegex(op), rest, nil
	case '{':
		return t.consumeVariable(s)
	default:
		lit, rest, err := consumeURILiteral(s)
		return regexp.QuoteMeta(lit), rest, err
	}
}

// consumeURIOperator: "**" or "*" (s starts with '*').
func consumeURIOperator(s string) (string, string) {
	if strings.HasPrefix(s, "**") {
		return "**", s[2:]
	}
	return "*", s[1:]
}

func uriGlobRegex(op string) string {
	if op == "**" {
		return uriTextGlob
	}
	return uriPathGlob
}

// consumeURILiteral: the text up to the next '/', which must be valid literal chars.
func consumeURILiteral(s string) (string, string, error) {
	lit, _, _ := strings.Cut(s, "/")
	if !uriLiteral.MatchString(lit) {
		return "", "", errors.New("invalid literal")
	}
	return lit, s[len(lit):], nil
}

// consumeVariable: `{name}` or `{name=match/match...}` (consumeVariable).
func (t *uriTemplate) consumeVariable(s string) (string, string, error) {
	if len(s) < 2 {
		return "", "", errors.New("invalid variable")
	}
	body, rest, ok := strings.Cut(s[1:], "}")
	if !ok {
		return "", "", errors.New("unmatched variable bracket")
	}
	name, match, hasMatch := strings.Cut(body, "=")
	if !uriVariableName.MatchString(name) {
		return "", "", errors.New("invalid variable name")
	}
	t.vars = append(t.vars, name)
	if !hasMatch {
		t.globs = append(t.globs, "*")
		return "(?P<" + name + ">" + uriPathGlob + ")", rest, nil
	}
	if match == "" {
		return "", "", errors.New("empty variable match")
	}
	var parts []string
	for match != "" {
		if match[0] == '*' {
			op, after := consumeURIOperator(match)
			t.globs = append(t.globs, op)
			parts = append(parts, uriGlobRegex(op))
			match = after
		} else {
			lit, after, err := consumeURILiteral(match)
			if err != nil {
				return "", "", err
			}
			parts = append(parts, regexp.QuoteMeta(lit))
			match = after
		}
		if match != "" {
			if match[0] != '/' || len(match) == 1 {
				return "", "", errors.New("invalid variable match")
			}
			match = match[1:]
		}
	}
	return "(?P<" + name + ">" + strings.Join(parts, "/") + ")", rest, nil
}

// validate: Envoy's gatherCaptureNames and validateNoOperatorAfterTextGlob.
func (t *uriTemplate) validate() error {
	if len(t.vars) > uriMaxVariables {
		return errors.New("exceeded variable count limit")
	}
	seen := map[string]bool{}
	for _, v := range t.vars {
		if len(v) > uriMaxVariableLen {
			return errors.New("invalid variable length")
		}
		if seen[v] {
			return errors.New("repeated variable name")
		}
		seen[v] = true
	}
	textGlob := false
	for _, g := range t.globs {
		if textGlob {
			return errors.New("glob after text glob")
		}
		textGlob = g == "**"
	}
	return nil
}

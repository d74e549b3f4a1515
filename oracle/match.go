package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// matchRoute returns the index of the first route of vh that matches req, with
// Envoy's RouteMatch semantics (envoy/source/common/router/config_impl.cc:
// RouteEntryImplBase::matchRoute; header_utility.cc: HeaderUtility::matchHeaders),
// and the match fields it could not evaluate.
func matchRoute(vh *route.VirtualHost, req Request) (int, []string) {
	var unsupported []string
	for i, r := range vh.Routes {
		ok, why := routeMatches(r.Match, req)
		if why != "" {
			unsupported = append(unsupported, fmt.Sprintf("route %d (%s): %s", i, r.Name, why))
		}
		if ok {
			return i, unsupported
		}
	}
	return -1, unsupported
}

func routeMatches(m *route.RouteMatch, req Request) (bool, string) {
	caseSensitive := m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()
	path := req.Path
	pathNoQuery, query, _ := strings.Cut(path, "?")
	var why string
	switch p := m.PathSpecifier.(type) {
	case *route.RouteMatch_Prefix:
		if !hasPrefix(path, p.Prefix, caseSensitive) {
			return false, ""
		}
	case *route.RouteMatch_Path:
		if !equal(pathNoQuery, p.Path, caseSensitive) {
			return false, ""
		}
	case *route.RouteMatch_SafeRegex:
		if !fullMatch(p.SafeRegex.GetRegex(), pathNoQuery) {
			return false, ""
		}
	case *route.RouteMatch_PathSeparatedPrefix:
		pre := p.PathSeparatedPrefix
		if !hasPrefix(pathNoQuery, pre, caseSensitive) ||
			(len(pathNoQuery) > len(pre) && pathNoQuery[len(pre)] != '/') {
			return false, ""
		}
	default:
		return false, fmt.Sprintf("path specifier %T not evaluated", p)
	}
	if m.GetRuntimeFraction() != nil {
		why = "runtime_fraction not evaluated"
	}
	for _, h := range m.Headers {
		if !headerMatches(h, req) {
			return false, why
		}
	}
	for _, q := range m.QueryParameters {
		if !queryMatches(q, query) {
			return false, why
		}
	}
	for _, dm := range m.DynamicMetadata {
		if dm.GetFilter() != jwtAuthnFilter {
			return false, fmt.Sprintf("dynamic_metadata of %s not evaluated", dm.GetFilter())
		}
		// A route is looked up only for a request the JWT filter let through: its
		// token (if any) verified, so its payload is the token's claims (a token that
		// fails verification is refused before routing; that verdict is the model's
		// and the live run's to judge, not compared here).
		v := metadataValue(unverifiedJWTPayload(req), dm.GetPath())
		e := &authzEval{}
		if e.valueMatches(dm.GetValue(), v) == dm.GetInvert() {
			return false, why
		}
	}
	return true, why
}

// unverifiedJWTPayload: the payload of the token a request carries where Istio's
// default jwtRules read it (Authorization: Bearer, the access_token parameter), under
// the key the JWT filter writes it (payload_in_metadata "payload"); nil without one.
func unverifiedJWTPayload(req Request) *structpb.Struct {
	token := ""
	if v, ok := requestHeader(req, "authorization"); ok && strings.HasPrefix(v, "Bearer ") {
		token = strings.TrimPrefix(v, "Bearer ")
	} else if _, q, ok := strings.Cut(req.Path, "?"); ok {
		for _, kv := range strings.Split(q, "&") {
			if k, v, _ := strings.Cut(kv, "="); k == "access_token" {
				token = v
			}
		}
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil
	}
	var claims map[string]any
	if json.Unmarshal(raw, &claims) != nil {
		return nil
	}
	payload, err := structpb.NewStruct(map[string]any{"payload": claims})
	if err != nil {
		return nil
	}
	return payload
}

func requestHeader(req Request, name string) (string, bool) {
	switch strings.ToLower(name) {
	case ":method":
		if req.Method == "" {
			return "GET", true
		}
		return req.Method, true
	case ":authority", "host":
		return req.Host, true
	case ":scheme":
		if req.Scheme == "" {
			return "http", true
		}
		return req.Scheme, true
	case ":path":
		return req.Path, true
	}
	for k, v := range req.Headers {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

func headerMatches(h *route.HeaderMatcher, req Request) bool {
	v, present := requestHeader(req, h.Name)
	if !present && !h.TreatMissingHeaderAsEmpty {
		// envoy source/common/http/header_utility.cc, HeaderUtility::matchHeaders: a
		// missing header matches only a present_match, true when inverted (so an
		// inverted present_match, Istio's `withoutHeaders: {h: {regex: "*"}}`, matches
		// a request without h) and false otherwise.
		_, isPresent := h.HeaderMatchSpecifier.(*route.HeaderMatcher_PresentMatch)
		if h.InvertMatch {
			return isPresent && h.GetPresentMatch()
		}
		return isPresent && !h.GetPresentMatch()
	}
	var ok bool
	switch s := h.HeaderMatchSpecifier.(type) {
	case *route.HeaderMatcher_PresentMatch:
		ok = s.PresentMatch
	case *route.HeaderMatcher_StringMatch:
		ok = stringMatches(s.StringMatch, v)
	case *route.HeaderMatcher_ExactMatch:
		ok = v == s.ExactMatch
	case *route.HeaderMatcher_PrefixMatch:
		ok = strings.HasPrefix(v, s.PrefixMatch)
	case *route.HeaderMatcher_SuffixMatch:
		ok = strings.HasSuffix(v, s.SuffixMatch)
	case *route.HeaderMatcher_ContainsMatch:
		ok = strings.Contains(v, s.ContainsMatch)
	case *route.HeaderMatcher_SafeRegexMatch:
		ok = fullMatch(s.SafeRegexMatch.GetRegex(), v)
	case nil:
		ok = present
	}
	return ok != h.InvertMatch
}

func queryMatches(q *route.QueryParameterMatcher, query string) bool {
	var value string
	found := false
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if k == q.Name {
			value, found = v, true
			break
		}
	}
	switch s := q.QueryParameterMatchSpecifier.(type) {
	case *route.QueryParameterMatcher_PresentMatch:
		return found == s.PresentMatch
	case *route.QueryParameterMatcher_StringMatch:
		return found && stringMatches(s.StringMatch, value)
	}
	return found
}

func stringMatches(m *matcher.StringMatcher, v string) bool {
	ic := m.GetIgnoreCase()
	switch p := m.MatchPattern.(type) {
	case *matcher.StringMatcher_Exact:
		return equal(v, p.Exact, !ic)
	case *matcher.StringMatcher_Prefix:
		return hasPrefix(v, p.Prefix, !ic)
	case *matcher.StringMatcher_Suffix:
		if ic {
			return strings.HasSuffix(strings.ToLower(v), strings.ToLower(p.Suffix))
		}
		return strings.HasSuffix(v, p.Suffix)
	case *matcher.StringMatcher_Contains:
		if ic {
			return strings.Contains(strings.ToLower(v), strings.ToLower(p.Contains))
		}
		return strings.Contains(v, p.Contains)
	case *matcher.StringMatcher_SafeRegex:
		return fullMatch(p.SafeRegex.GetRegex(), v)
	}
	return false
}

func hasPrefix(s, prefix string, caseSensitive bool) bool {
	if caseSensitive {
		return strings.HasPrefix(s, prefix)
	}
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

func equal(a, b string, caseSensitive bool) bool {
	if caseSensitive {
		return a == b
	}
	return strings.EqualFold(a, b)
}

// fullMatch: Envoy's safe_regex (RE2) must match the whole value.
func fullMatch(pattern, v string) bool {
	re, err := regexp.Compile("^(?:" + pattern + ")$")
	return err == nil && re.MatchString(v)
}

package main

import (
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	uritemplate "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	exprpb "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"istio.io/istio/pilot/pkg/model"
)

// --- helpers -------------------------------------------------------------------

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func gatewayHCM() *hcmv3.HttpConnectionManager {
	return &hcmv3.HttpConnectionManager{UseRemoteAddress: wrapperspb.Bool(true), NormalizePath: wrapperspb.Bool(true)}
}

// evalFor builds the evaluation for req on a gateway connection manager (hcm nil:
// the default one) over a plaintext chain.
func evalFor(hcm *hcmv3.HttpConnectionManager, req Request) *authzEval {
	if hcm == nil {
		hcm = gatewayHCM()
	}
	g := &generated{proxy: &model.Proxy{IPAddresses: []string{"10.244.0.2"}}}
	return &authzEval{req: newAuthzRequest(g, &listener.FilterChain{}, hcm, req)}
}

func baseRequest() Request {
	return Request{Port: 8080, Method: "GET", Scheme: "http", Host: "app.example.com", Path: "/", Headers: map[string]string{}}
}

func exact(s string) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: s}}
}

func headerPerm(h *route.HeaderMatcher) *rbacpb.Permission {
	return &rbacpb.Permission{Rule: &rbacpb.Permission_Header{Header: h}}
}

func stringHeader(name string, m *matcher.StringMatcher) *route.HeaderMatcher {
	return &route.HeaderMatcher{Name: name, HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: m}}
}

func pathPerm(m *matcher.StringMatcher) *rbacpb.Permission {
	return &rbacpb.Permission{Rule: &rbacpb.Permission_UrlPath{UrlPath: &matcher.PathMatcher{Rule: &matcher.PathMatcher_Path{Path: m}}}}
}

func cidr(prefix string, bits uint32) *core.CidrRange {
	return &core.CidrRange{AddressPrefix: prefix, PrefixLen: wrapperspb.UInt32(bits)}
}

var anyPrincipal = &rbacpb.Principal{Identifier: &rbacpb.Principal_Any{Any: true}}

func policy(perm *rbacpb.Permission) *rbacpb.Policy {
	return &rbacpb.Policy{Permissions: []*rbacpb.Permission{perm}, Principals: []*rbacpb.Principal{anyPrincipal}}
}

func rbacHTTPFilter(t *testing.T, cfg *rbachttp.RBAC) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: rbacFilter, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, cfg)}}
}

func chainWith(t *testing.T, hcm *hcmv3.HttpConnectionManager, filters ...*hcmv3.HttpFilter) *listener.FilterChain {
	hcm.HttpFilters = append(filters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router"})
	return &listener.FilterChain{Filters: []*listener.Filter{{
		Name:       "envoy.filters.network.http_connection_manager",
		ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, hcm)},
	}}}
}

func evaluate(t *testing.T, fc *listener.FilterChain, req Request) (*AuthzResult, []string) {
	t.Helper()
	g := &generated{proxy: &model.Proxy{IPAddresses: []string{"10.244.0.2"}}}
	return evaluateAuthz(g, fc, nil, nil, req)
}

// --- URI templates -------------------------------------------------------------

func TestURITemplateMatches(t *testing.T) {
	cases := []struct {
		tmpl, path string
		want       bool
	}{
		{"/atlas-ui/**/secret", "/atlas-ui/a/b/secret", true},
		{"/atlas-ui/**/secret", "/atlas-ui/a/secret", true},
		{"/atlas-ui/**/secret", "/atlas-ui//secret", true}, // ** may be empty
		{"/atlas-ui/**/secret", "/atlas-ui/secret", false}, // the '/' around ** stays
		{"/atlas-ui/**/secret", "/atlas-ui/a/secret/x", false},
		{"/atlas-ui/**/secret", "/atlas-ui/a/secret?x=1", true}, // query ignored
		{"/a/*/c", "/a/b/c", true},
		{"/a/*/c", "/a//c", false}, // * is one or more chars
		{"/a/*/c", "/a/b/x/c", false},
		{"/a/*", "/a/b", true},
		{"/a/*", "/a/", false},
		{"/a/**", "/a/", true},
		{"/a/**", "/a", false},
		{"/a/*.jpg", "/a/x.jpg", true}, // suffix after an operator
		{"/a/*.jpg", "/a/x.png", false},
		{"/a/{id}/b", "/a/42/b", true},
		{"/a/{id}/b", "/a/4/2/b", false},
		{"/a/{rest=**}", "/a/x/y", true},
		{"/a/{v=x/*}/c", "/a/x/y/c", true},
		{"/a/{v=x/*}/c", "/a/z/y/c", false},
		{"/a/", "/a/", true}, // trailing '/': an empty last segment
		{"/a/", "/a", false},
		{"/a.b", "/aXb", false}, // literals are literal
		{"/a+b/(c)", "/a+b/(c)", true},
		{"/A/*", "/a/b", false}, // case-sensitive
		{"/a/*", "/a/b c", false},
	}
	for _, c := range cases {
		re, err := uriTemplateRegexp(c.tmpl)
		if err != nil {
			t.Errorf("%s: %v", c.tmpl, err)
			continue
		}
		if got := re.MatchString(pathWithoutQuery(c.path)); got != c.want {
			t.Errorf("%s on %s: got %v, want %v (regex %s)", c.tmpl, c.path, got, c.want, re)
		}
	}
}

func TestURITemplateRejectedAsEnvoyDoes(t *testing.T) {
	for _, tmpl := range []string{
		"a/b",                      // not absolute
		"/a//b",                    // empty literal
		"/a/**/*",                  // glob after text glob
		"/a/**/{x}",                // implicit variable glob after text glob
		"/a/*.jpg/b",               // suffix not at the end
		"/a/{x",                    // unmatched bracket
		"/a/{1x}",                  // bad variable name
		"/a/{x=}",                  // empty match
		"/a/{x}/{x}",               // repeated name
		"/{a}/{b}/{c}/{d}/{e}/{f}", // more than 5 variables
		"/{abcdefghijklmnopq}",     // name longer than 16
		"/a b",                     // not printable
		"/a/b*c",                   // '*' inside a literal
	} {
		if _, err := uriTemplateRegexp(tmpl); err == nil {
			t.Errorf("%s: accepted, Envoy rejects it", tmpl)
		}
	}
}

// --- request attributes --------------------------------------------------------

func TestLastAddressFromXFF(t *testing.T) {
	cases := []struct {
		xff  string
		skip uint32
		want string
	}{
		{"1.1.1.1", 0, "1.1.1.1"},
		{"1.1.1.1,2.2.2.2", 0, "2.2.2.2"},
		{"1.1.1.1, 2.2.2.2", 0, "2.2.2.2"},
		{"1.1.1.1, 2.2.2.2", 1, "1.1.1.1"},
		{"1.1.1.1, 2.2.2.2", 2, ""},
		{"1.1.1.1,", 0, ""}, // the trailing comma stays: not an address
		{"nope, 2.2.2.2", 1, ""},
		{"2001:db8::1", 0, "2001:db8::1"},
	}
	for _, c := range cases {
		got, ok := lastAddressFromXFF(c.xff, c.skip)
		if (c.want == "") != !ok || (ok && got.String() != c.want) {
			t.Errorf("%q skip %d: got %v %v, want %q", c.xff, c.skip, got, ok, c.want)
		}
	}
}

func TestRemoteAddress(t *testing.T) {
	cases := []struct {
		name       string
		hops       uint32
		useRemote  bool
		source     string
		xff        string
		remote     string
		direct     string
		appendedTo string
	}{
		{"no hops: the peer", 0, true, "203.0.113.7", "1.1.1.1", "203.0.113.7", "203.0.113.7", "1.1.1.1,203.0.113.7"},
		{"default source", 0, true, "", "", "127.0.0.1", "127.0.0.1", "10.244.0.2"},
		{"one hop: the last XFF entry", 1, true, "203.0.113.7", "1.1.1.1, 2.2.2.2", "2.2.2.2", "203.0.113.7", "1.1.1.1, 2.2.2.2,203.0.113.7"},
		{"two hops: the second from the right", 2, true, "203.0.113.7", "1.1.1.1, 2.2.2.2", "1.1.1.1", "203.0.113.7", ""},
		{"more hops than entries: the peer", 3, true, "203.0.113.7", "1.1.1.1, 2.2.2.2", "203.0.113.7", "203.0.113.7", ""},
		{"one hop, no XFF: the peer", 1, true, "203.0.113.7", "", "203.0.113.7", "203.0.113.7", "203.0.113.7"},
		{"no remote address: XFF's last", 0, false, "203.0.113.7", "1.1.1.1, 2.2.2.2", "2.2.2.2", "203.0.113.7", "1.1.1.1, 2.2.2.2"},
	}
	for _, c := range cases {
		req := baseRequest()
		req.SourceAddress = c.source
		if c.xff != "" {
			req.Headers["X-Forwarded-For"] = c.xff
		}
		hcm := &hcmv3.HttpConnectionManager{UseRemoteAddress: wrapperspb.Bool(c.useRemote), XffNumTrustedHops: c.hops}
		a := evalFor(hcm, req).req
		if a.remote.String() != c.remote || a.directRemote.String() != c.direct {
			t.Errorf("%s: remote %v direct %v, want %s %s", c.name, a.remote, a.directRemote, c.remote, c.direct)
		}
		if c.appendedTo != "" && a.headers["x-forwarded-for"] != c.appendedTo {
			t.Errorf("%s: x-forwarded-for %q, want %q", c.name, a.headers["x-forwarded-for"], c.appendedTo)
		}
	}
}

func TestForwardedProtoAndScheme(t *testing.T) {
	req := baseRequest()
	req.Headers["x-forwarded-proto"] = "https"
	a := evalFor(nil, req).req // no trusted hop: overwritten with the connection's
	if a.headers["x-forwarded-proto"] != "http" || a.scheme != "http" {
		t.Errorf("untrusted x-forwarded-proto kept: %q %q", a.headers["x-forwarded-proto"], a.scheme)
	}
	hcm := gatewayHCM()
	hcm.XffNumTrustedHops = 1
	a = evalFor(hcm, req).req
	if a.headers["x-forwarded-proto"] != "https" || a.scheme != "https" {
		t.Errorf("trusted x-forwarded-proto dropped: %q %q", a.headers["x-forwarded-proto"], a.scheme)
	}
}

func TestFilterPathAndAuthority(t *testing.T) {
	hcm := gatewayHCM()
	if p, note := filterPath(hcm, "/a/b?x=1"); p != "/a/b?x=1" || note != "" {
		t.Errorf("plain path: %q %q", p, note)
	}
	for _, p := range []string{"/a/../b", "/a/./b", "/a b", "/a#f"} {
		if _, note := filterPath(hcm, p); note == "" {
			t.Errorf("%s: no note, Envoy would normalize it", p)
		}
	}
	// An escaped slash: kept as written by default (KEEP_UNCHANGED), unescaped (so not
	// modelled here) when the connection manager is told to.
	if _, note := filterPath(hcm, "/a%2Fb"); note != "" {
		t.Errorf("/a%%2Fb kept unchanged: %q", note)
	}
	unescape := gatewayHCM()
	unescape.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT
	if _, note := filterPath(unescape, "/a%2Fb"); note == "" {
		t.Errorf("/a%%2Fb unescaped: no note")
	}
	hcm.MergeSlashes = true
	if p, _ := filterPath(hcm, "//a///b/?q=//"); p != "/a/b/?q=//" {
		t.Errorf("merge_slashes: %q", p)
	}
	if got := filterAuthority(&hcmv3.HttpConnectionManager{StripPortMode: &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true}}, "a.example.com:80", 8080); got != "a.example.com" {
		t.Errorf("strip_any_host_port: %q", got)
	}
	if got := filterAuthority(&hcmv3.HttpConnectionManager{StripMatchingHostPort: true}, "a.example.com:80", 8080); got != "a.example.com:80" {
		t.Errorf("strip_matching_host_port with another port: %q", got)
	}
	if got := filterAuthority(&hcmv3.HttpConnectionManager{StripMatchingHostPort: true}, "[::1]:8080", 8080); got != "[::1]" {
		t.Errorf("strip_matching_host_port: %q", got)
	}
	if got := filterAuthority(&hcmv3.HttpConnectionManager{StripTrailingHostDot: true}, "a.example.com.:80", 8080); got != "a.example.com:80" {
		t.Errorf("strip_trailing_host_dot: %q", got)
	}
}

// --- matchers ------------------------------------------------------------------

func TestHeaderMatchers(t *testing.T) {
	req := baseRequest()
	req.Method = "POST"
	req.Path = "/admin/x?debug=1"
	req.Host = "Atlas.Example.com"
	req.Headers = map[string]string{"X-Token": "bearer-abc", "Empty": ""}
	cases := []struct {
		name string
		h    *route.HeaderMatcher
		want bool
	}{
		{"exact", stringHeader("x-token", exact("bearer-abc")), true},
		{"exact, other case of value", stringHeader("x-token", exact("Bearer-abc")), false},
		{"exact ignore_case", stringHeader("x-token", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: "BEARER-ABC"}, IgnoreCase: true}), true},
		{"prefix", stringHeader("x-token", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "bearer-"}}), true},
		{"suffix", stringHeader("x-token", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Suffix{Suffix: "-abc"}}), true},
		{"suffix, no", stringHeader("x-token", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Suffix{Suffix: "-xyz"}}), false},
		{"contains", stringHeader("x-token", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Contains{Contains: "er-a"}}), true},
		{"regex is a full match", stringHeader("x-token", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "bearer"}}}), false},
		{"regex", stringHeader("x-token", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "bearer-[a-c]+"}}}), true},
		{"header names are case-insensitive", stringHeader("X-TOKEN", exact("bearer-abc")), true},
		{"missing header", stringHeader("x-other", exact("")), false},
		{"missing header, inverted string match", &route.HeaderMatcher{Name: "x-other", InvertMatch: true, HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: exact("a")}}, false},
		{"missing header treated as empty", &route.HeaderMatcher{Name: "x-other", TreatMissingHeaderAsEmpty: true, HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: exact("")}}, true},
		{"present", &route.HeaderMatcher{Name: "empty", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}}, true},
		{"present, missing", &route.HeaderMatcher{Name: "x-other", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}}, false},
		{"present false, missing", &route.HeaderMatcher{Name: "x-other", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: false}}, true},
		{"inverted present, missing", &route.HeaderMatcher{Name: "x-other", InvertMatch: true, HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}}, true},
		{"inverted exact", &route.HeaderMatcher{Name: "x-token", InvertMatch: true, HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: exact("other")}}, true},
		{"range", &route.HeaderMatcher{Name: "x-n", HeaderMatchSpecifier: &route.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 1, End: 5}}}, false},
		{":method", stringHeader(":method", exact("POST")), true},
		{":method GET", stringHeader(":method", exact("GET")), false},
		{":path keeps the query", stringHeader(":path", exact("/admin/x?debug=1")), true},
		{":authority", stringHeader(":authority", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Suffix{Suffix: ".example.com"}, IgnoreCase: true}), true},
		{":authority is case-sensitive without ignore_case", stringHeader(":authority", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "atlas"}}), false},
		{"host is :authority", stringHeader("host", exact("Atlas.Example.com")), true},
		{":scheme", stringHeader(":scheme", exact("http")), true},
	}
	for _, c := range cases {
		e := evalFor(nil, req)
		if got := e.permission(headerPerm(c.h)); got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
		if len(e.unsupported) > 0 {
			t.Errorf("%s: unsupported %v", c.name, e.unsupported)
		}
	}
}

func TestHeadersTheConnectionManagerSets(t *testing.T) {
	req := baseRequest()
	req.Headers = map[string]string{"x-forwarded-client-cert": "By=x", "x-request-id": "1"}
	e := evalFor(nil, req)
	if e.permission(headerPerm(&route.HeaderMatcher{Name: "x-forwarded-client-cert", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}})) {
		t.Error("x-forwarded-client-cert from a client without certificate is removed")
	}
	e.permission(headerPerm(stringHeader("x-request-id", exact("1"))))
	if len(e.unsupported) != 1 || !strings.Contains(e.unsupported[0], "x-request-id") {
		t.Errorf("x-request-id is generated: want it unsupported, got %v", e.unsupported)
	}
	if !e.permission(headerPerm(stringHeader("x-forwarded-for", exact("10.244.0.2")))) {
		t.Errorf("x-forwarded-for: a loopback peer is appended as the local address, got %q", e.req.headers["x-forwarded-for"])
	}
}

func TestURLPathIgnoresQuery(t *testing.T) {
	req := baseRequest()
	req.Path = "/admin?x=/y"
	e := evalFor(nil, req)
	if !e.permission(pathPerm(exact("/admin"))) {
		t.Error("url_path exact /admin does not match /admin?x=/y")
	}
	if e.permission(pathPerm(&matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Suffix{Suffix: "/y"}})) {
		t.Error("url_path matched the query")
	}
	if !e.permission(pathPerm(&matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "/ADM"}, IgnoreCase: true})) {
		t.Error("url_path prefix ignore_case")
	}
}

func TestURITemplatePermission(t *testing.T) {
	perm := &rbacpb.Permission{Rule: &rbacpb.Permission_UriTemplate{UriTemplate: &core.TypedExtensionConfig{
		Name:        "uri-template",
		TypedConfig: mustAny(t, &uritemplate.UriTemplateMatchConfig{PathTemplate: "/atlas-ui/**/secret"}),
	}}}
	for path, want := range map[string]bool{"/atlas-ui/x/secret?a=b": true, "/atlas-ui/secret": false} {
		req := baseRequest()
		req.Path = path
		if got := evalFor(nil, req).permission(perm); got != want {
			t.Errorf("%s: got %v want %v", path, got, want)
		}
	}
	bad := &rbacpb.Permission{Rule: &rbacpb.Permission_UriTemplate{UriTemplate: &core.TypedExtensionConfig{
		Name: "uri-template", TypedConfig: mustAny(t, &uritemplate.UriTemplateMatchConfig{PathTemplate: "/a/**/*"}),
	}}}
	e := evalFor(nil, baseRequest())
	if e.permission(bad) || len(e.unsupported) == 0 {
		t.Errorf("an invalid template: want no match and unsupported, got %v", e.unsupported)
	}
}

func TestConnectionMatchers(t *testing.T) {
	req := baseRequest()
	req.SourceAddress = "10.1.2.3"
	req.Headers["x-forwarded-for"] = "192.168.0.9"
	hcm := gatewayHCM()
	hcm.XffNumTrustedHops = 1
	e := evalFor(hcm, req)
	checks := []struct {
		name string
		got  bool
		want bool
	}{
		{"destination_port", e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_DestinationPort{DestinationPort: 8080}}), true},
		{"destination_port other", e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_DestinationPort{DestinationPort: 8443}}), false},
		{"destination_port_range", e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 8000, End: 8081}}}), true},
		{"destination_port_range end excluded", e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 8000, End: 8080}}}), false},
		{"destination_ip", e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_DestinationIp{DestinationIp: cidr("10.244.0.0", 16)}}), true},
		{"remote_ip from XFF", e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_RemoteIp{RemoteIp: cidr("192.168.0.0", 16)}}), true},
		{"remote_ip is not the peer", e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}}), false},
		{"direct_remote_ip is the peer", e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.0.0.0", 8)}}), true},
		{"direct_remote_ip /32", e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.1.2.3", 32)}}), true},
		{"direct_remote_ip other /32", e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.1.2.4", 32)}}), false},
		{"an IPv6 range never holds an IPv4 address", e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_DirectRemoteIp{DirectRemoteIp: cidr("::", 0)}}), false},
		{"requested_server_name, plaintext", e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_RequestedServerName{RequestedServerName: exact("app.example.com")}}), false},
		{"requested_server_name empty, plaintext", e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_RequestedServerName{RequestedServerName: exact("")}}), true},
		{"authenticated, plaintext", e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_Authenticated_{Authenticated: &rbacpb.Principal_Authenticated{}}}), false},
		{"peer principal filter state", e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_FilterState{FilterState: &matcher.FilterStateMatcher{Key: peerPrincipalKey, Matcher: &matcher.FilterStateMatcher_StringMatch{StringMatch: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: ""}}}}}}), false},
		{"not_id of a non-match", e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_NotId{NotId: &rbacpb.Principal{Identifier: &rbacpb.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}}}}), true},
		{"not_rule of any", e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_NotRule{NotRule: &rbacpb.Permission{Rule: &rbacpb.Permission_Any{Any: true}}}}), false},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	if len(e.unsupported) > 0 {
		t.Errorf("unsupported: %v", e.unsupported)
	}
}

func TestTLSConnectionMatchers(t *testing.T) {
	req := baseRequest()
	req.Scheme = "https"
	req.Host = "app.example.com:443"
	hcm := gatewayHCM()
	simpleTLS := &listener.FilterChain{TransportSocket: &core.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{})}}}
	g := &generated{proxy: &model.Proxy{IPAddresses: []string{"10.244.0.2"}}}
	e := &authzEval{req: newAuthzRequest(g, simpleTLS, hcm, req)}
	sni := e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_RequestedServerName{RequestedServerName: exact("app.example.com")}})
	// TLS without client certificate: Envoy's AuthenticatedMatcher matches any TLS
	// connection when no principal_name is given, else the (empty) subject.
	anyAuth := e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_Authenticated_{Authenticated: &rbacpb.Principal_Authenticated{}}})
	named := e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_Authenticated_{Authenticated: &rbacpb.Principal_Authenticated{PrincipalName: exact("spiffe://cluster.local/ns/a/sa/b")}}})
	empty := e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_Authenticated_{Authenticated: &rbacpb.Principal_Authenticated{PrincipalName: &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: ""}}}}})
	if !sni || !anyAuth || named || !empty || e.req.scheme != "https" {
		t.Errorf("sni %v, authenticated{} %v, named %v, empty-name %v, scheme %s", sni, anyAuth, named, empty, e.req.scheme)
	}
	mutual := &listener.FilterChain{TransportSocket: &core.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true)})}}}
	e = &authzEval{req: newAuthzRequest(g, mutual, hcm, req)}
	e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_Authenticated_{Authenticated: &rbacpb.Principal_Authenticated{PrincipalName: exact("x")}}})
	if len(e.unsupported) == 0 {
		t.Error("a chain requiring a client certificate: the principal is not known, want unsupported")
	}
}

// A sidecar's mTLS chain with the peer known (the gateway's certificate): its URI SAN
// is the authenticated principal and Istio's io.istio.peer_principal filter state;
// another identity matches neither, and nothing is left unevaluated.
func TestKnownPeerOnAnMTLSChain(t *testing.T) {
	req := baseRequest()
	req.PeerPrincipal = "spiffe://cluster.local/ns/istio-ingress/sa/gw"
	req.SNI = "outbound_.8080_._.app.ns.svc.cluster.local"
	mutual := &listener.FilterChain{TransportSocket: &core.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{RequireClientCertificate: wrapperspb.Bool(true)})}}}
	g := &generated{proxy: &model.Proxy{IPAddresses: []string{"10.244.0.2"}}}
	e := &authzEval{req: newAuthzRequest(g, mutual, gatewayHCM(), req)}
	authenticated := func(name string) bool {
		return e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_Authenticated_{Authenticated: &rbacpb.Principal_Authenticated{PrincipalName: exact(name)}}})
	}
	peer := func(m *matcher.StringMatcher) bool {
		return e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_FilterState{FilterState: &matcher.FilterStateMatcher{Key: peerPrincipalKey, Matcher: &matcher.FilterStateMatcher_StringMatch{StringMatch: m}}}})
	}
	ns := &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: ".*/ns/istio-ingress/.*"}}}
	other := &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: ".*/ns/atlas/.*"}}}
	sni := e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_RequestedServerName{RequestedServerName: exact(req.SNI)}})
	if !authenticated(req.PeerPrincipal) || authenticated("spiffe://cluster.local/ns/a/sa/b") ||
		!peer(exact(req.PeerPrincipal)) || !peer(ns) || peer(other) || !sni {
		t.Errorf("authenticated %v/%v, peer exact %v ns %v other %v, sni %v", authenticated(req.PeerPrincipal),
			authenticated("spiffe://cluster.local/ns/a/sa/b"), peer(exact(req.PeerPrincipal)), peer(ns), peer(other), sni)
	}
	if len(e.unsupported) != 0 {
		t.Errorf("unsupported: %v", e.unsupported)
	}
	// Plaintext (no peer): the filter state is not set.
	plain := baseRequest()
	e = &authzEval{req: newAuthzRequest(g, &listener.FilterChain{}, gatewayHCM(), plain)}
	if peer(ns) || peer(&matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: ""}}) {
		t.Error("a plaintext connection has no peer principal")
	}
}

func TestMetadataMatchers(t *testing.T) {
	claim := &matcher.MetadataMatcher{Filter: jwtAuthnFilter,
		Path: []*matcher.MetadataMatcher_PathSegment{
			{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: "payload"}},
			{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: "groups"}},
		},
		Value: &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_OrMatch{OrMatch: &matcher.OrMatcher{ValueMatchers: []*matcher.ValueMatcher{
			{MatchPattern: &matcher.ValueMatcher_ListMatch{ListMatch: &matcher.ListMatcher{MatchPattern: &matcher.ListMatcher_OneOf{OneOf: &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: exact("admin")}}}}}},
			{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: exact("admin")}},
		}}}},
	}
	perm := &rbacpb.Permission{Rule: &rbacpb.Permission_Metadata{Metadata: claim}}
	e := evalFor(nil, baseRequest())
	if e.permission(perm) {
		t.Error("no JWT payload: a claim matcher matches nothing")
	}
	inverted := proto.Clone(claim).(*matcher.MetadataMatcher)
	inverted.Invert = true
	if !e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_Metadata{Metadata: inverted}}) {
		t.Error("no JWT payload: an inverted matcher matches")
	}
	present := proto.Clone(claim).(*matcher.MetadataMatcher)
	present.Value = &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_PresentMatch{PresentMatch: true}}
	if e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_Metadata{Metadata: present}}) {
		t.Error("no JWT payload: present_match does not match")
	}
	if len(e.unsupported) > 0 {
		t.Errorf("unsupported: %v", e.unsupported)
	}
	// The hook for a verified token's payload.
	payload, err := structpb.NewStruct(map[string]any{"payload": map[string]any{"groups": []any{"dev", "admin"}}})
	if err != nil {
		t.Fatal(err)
	}
	e.req.dynamicMetadata = map[string]*structpb.Struct{jwtAuthnFilter: payload}
	if !e.permission(perm) {
		t.Error("a payload with groups [dev admin]: the claim matcher matches")
	}
	other := proto.Clone(claim).(*matcher.MetadataMatcher)
	other.Filter = "istio_authn"
	if e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_Metadata{Metadata: other}}) || len(e.unsupported) == 0 {
		t.Error("metadata of another filter: want unsupported")
	}
}

func TestUnsupportedMatchers(t *testing.T) {
	e := evalFor(nil, baseRequest())
	if e.permission(&rbacpb.Permission{Rule: &rbacpb.Permission_Matcher{Matcher: &core.TypedExtensionConfig{Name: "x"}}}) {
		t.Error("an extension matcher matched")
	}
	if e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_FilterState{FilterState: &matcher.FilterStateMatcher{Key: "other"}}}) {
		t.Error("unknown filter state matched")
	}
	if len(e.unsupported) != 2 {
		t.Errorf("want 2 unsupported, got %v", e.unsupported)
	}
	e = evalFor(nil, baseRequest())
	if !e.policyMatches("p", &rbacpb.Policy{Permissions: []*rbacpb.Permission{{Rule: &rbacpb.Permission_Any{Any: true}}},
		Principals: []*rbacpb.Principal{anyPrincipal}, Condition: &exprpb.Expr{}}) || len(e.unsupported) != 1 {
		t.Errorf("a CEL condition: want unsupported, got %v", e.unsupported)
	}
}

// --- filters -------------------------------------------------------------------

func denyAdmin() *rbachttp.RBAC {
	return &rbachttp.RBAC{Rules: &rbacpb.RBAC{Action: rbacpb.RBAC_DENY, Policies: map[string]*rbacpb.Policy{
		"ns[istio-ingress]-policy[deny-admin]-rule[0]": policy(pathPerm(&matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "/admin"}})),
	}}}
}

func allowHosts() *rbachttp.RBAC {
	return &rbachttp.RBAC{Rules: &rbacpb.RBAC{Action: rbacpb.RBAC_ALLOW, Policies: map[string]*rbacpb.Policy{
		"ns[istio-system]-policy[allow-b]-rule[0]": policy(headerPerm(stringHeader(":authority", exact("b.example.com")))),
		"ns[istio-system]-policy[allow-a]-rule[0]": policy(headerPerm(stringHeader(":authority", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Suffix{Suffix: ".example.com"}}))),
	}}}
}

func TestFilterOrder(t *testing.T) {
	cases := []struct {
		name, host, path string
		denied           bool
		action, policy   string
	}{
		{"DENY matches first", "a.example.com", "/admin", true, "DENY", "ns[istio-ingress]-policy[deny-admin]-rule[0]"},
		{"DENY misses, ALLOW matches (first policy in name order)", "b.example.com", "/", false, "ALLOW", "ns[istio-system]-policy[allow-a]-rule[0]"},
		{"DENY misses, ALLOW misses", "other.test", "/", true, "ALLOW", ""},
		{"DENY matches even for a host ALLOW would refuse", "other.test", "/admin/x", true, "DENY", "ns[istio-ingress]-policy[deny-admin]-rule[0]"},
	}
	fc := chainWith(t, gatewayHCM(), rbacHTTPFilter(t, denyAdmin()), rbacHTTPFilter(t, allowHosts()))
	for _, c := range cases {
		req := baseRequest()
		req.Host, req.Path = c.host, c.path
		res, unsupported := evaluate(t, fc, req)
		if res == nil || res.Filters != 2 || res.Denied != c.denied || res.Action != c.action || res.Policy != c.policy {
			t.Errorf("%s: got %+v", c.name, res)
		}
		if len(unsupported) > 0 {
			t.Errorf("%s: unsupported %v", c.name, unsupported)
		}
	}
}

func TestFiltersWithoutEffect(t *testing.T) {
	matchAll := map[string]*rbacpb.Policy{"p": policy(&rbacpb.Permission{Rule: &rbacpb.Permission_Any{Any: true}})}
	logOnly := &rbachttp.RBAC{Rules: &rbacpb.RBAC{Action: rbacpb.RBAC_LOG, Policies: matchAll}}
	shadowDeny := &rbachttp.RBAC{ShadowRules: &rbacpb.RBAC{Action: rbacpb.RBAC_DENY, Policies: matchAll}, ShadowRulesStatPrefix: "istio_dry_run_deny_"}
	denyNothing := &rbachttp.RBAC{Rules: &rbacpb.RBAC{Action: rbacpb.RBAC_DENY, Policies: map[string]*rbacpb.Policy{
		"q": policy(pathPerm(exact("/nope"))),
	}}}
	fc := chainWith(t, gatewayHCM(), rbacHTTPFilter(t, logOnly), rbacHTTPFilter(t, shadowDeny), rbacHTTPFilter(t, denyNothing))
	res, _ := evaluate(t, fc, baseRequest())
	if res == nil || res.Filters != 3 || res.Denied || res.Action != "" || res.Policy != "" {
		t.Errorf("LOG, shadow DENY and an unmatched DENY let the request through: got %+v", res)
	}
	// An ALLOW filter with no policy refuses everything.
	fc = chainWith(t, gatewayHCM(), rbacHTTPFilter(t, &rbachttp.RBAC{Rules: &rbacpb.RBAC{Action: rbacpb.RBAC_ALLOW}}))
	if res, _ := evaluate(t, fc, baseRequest()); res == nil || !res.Denied || res.Action != "ALLOW" {
		t.Errorf("ALLOW with no policy: got %+v", res)
	}
	// A disabled filter does nothing.
	f := rbacHTTPFilter(t, &rbachttp.RBAC{Rules: &rbacpb.RBAC{Action: rbacpb.RBAC_ALLOW}})
	f.Disabled = true
	if res, _ := evaluate(t, chainWith(t, gatewayHCM(), f), baseRequest()); res == nil || res.Denied {
		t.Errorf("disabled filter: got %+v", res)
	}
	// No RBAC filter: no answer.
	if res, _ := evaluate(t, chainWith(t, gatewayHCM()), baseRequest()); res != nil {
		t.Errorf("no RBAC filter: got %+v", res)
	}
}

func TestFirstPolicyInNameOrder(t *testing.T) {
	all := &rbacpb.Permission{Rule: &rbacpb.Permission_Any{Any: true}}
	rules := &rbacpb.RBAC{Action: rbacpb.RBAC_DENY, Policies: map[string]*rbacpb.Policy{
		"b": policy(all), "a-no": policy(pathPerm(exact("/x"))), "c": policy(all), "B": policy(all),
	}}
	if got := evalFor(nil, baseRequest()).firstMatchingPolicy(rules); got != "B" {
		t.Errorf("first matching policy: %q, want B (byte order)", got)
	}
	// A policy needs a matching permission AND a matching principal.
	noPrincipal := &rbacpb.RBAC{Policies: map[string]*rbacpb.Policy{"p": {Permissions: []*rbacpb.Permission{all}}}}
	if got := evalFor(nil, baseRequest()).firstMatchingPolicy(noPrincipal); got != "" {
		t.Errorf("a policy without principals matched: %q", got)
	}
}

func TestOtherSecurityFiltersAreReported(t *testing.T) {
	jwt := istiodJwtFilter(t, "x", nil, `{"keys":[]}`)
	fc := chainWith(t, gatewayHCM(), jwt, rbacHTTPFilter(t, denyAdmin()))
	if _, unsupported := evaluate(t, fc, baseRequest()); len(unsupported) != 0 {
		t.Errorf("no token: jwt_authn lets it through with no payload, got %v", unsupported)
	}
	// A token is verified (jwt.go): a malformed one is the JWT filter's 401, in the
	// header or the query.
	req := baseRequest()
	req.Headers["Authorization"] = "Bearer abc"
	if res, unsupported := evaluate(t, fc, req); len(unsupported) != 0 || res.DeniedBy != "jwt" || res.Status != 401 {
		t.Errorf("a malformed token: want the JWT filter's 401, got %+v %v", res, unsupported)
	}
	req = baseRequest()
	req.Path = "/?access_token=abc"
	if res, _ := evaluate(t, fc, req); res.DeniedBy != "jwt" || !strings.Contains(res.Why, string(jwtBadFormat)) {
		t.Errorf("a malformed token in the query: got %+v", res)
	}
	ext := &hcmv3.HttpFilter{Name: extAuthzFilter}
	fc = chainWith(t, gatewayHCM(), rbacHTTPFilter(t, denyAdmin()), ext)
	if _, unsupported := evaluate(t, fc, baseRequest()); len(unsupported) != 1 || !strings.Contains(unsupported[0], "ext_authz") {
		t.Errorf("ext_authz: got %v", unsupported)
	}
	vh := &route.VirtualHost{TypedPerFilterConfig: map[string]*anypb.Any{rbacFilter: mustAny(t, &rbachttp.RBACPerRoute{})}}
	g := &generated{proxy: &model.Proxy{IPAddresses: []string{"10.244.0.2"}}}
	if _, unsupported := evaluateAuthz(g, chainWith(t, gatewayHCM(), rbacHTTPFilter(t, denyAdmin())), vh, nil, baseRequest()); len(unsupported) != 1 {
		t.Errorf("per-route RBAC config: got %v", unsupported)
	}
}

func TestSourceAddressMustBeAnAddress(t *testing.T) {
	req := baseRequest()
	req.SourceAddress = "not-an-ip"
	e := evalFor(nil, req)
	if e.principal(&rbacpb.Principal{Identifier: &rbacpb.Principal_DirectRemoteIp{DirectRemoteIp: cidr("0.0.0.0", 0)}}) || len(e.unsupported) != 1 {
		t.Errorf("invalid source address: %v", e.unsupported)
	}
}

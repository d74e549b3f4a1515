package main

// What the gateway's RBAC HTTP filters decide for a simulated request, evaluated over
// the envoy.filters.http.rbac configs istiod generated (AuthorizationPolicy:
// pilot/pkg/security/authz/builder/builder.go puts AUDIT (LOG), then DENY, then ALLOW
// filters into the connection manager) with Envoy's semantics, independently of
// meshcheck's model:
//   - envoy/source/extensions/filters/http/rbac/rbac_filter.cc: each filter with
//     `rules` acts (ALLOW: 403 unless a policy matches; DENY: 403 if one does; LOG:
//     nothing); shadow rules never act;
//   - envoy/source/extensions/filters/common/rbac/engine_impl.cc: policies are tried in
//     name order, the first matching one is the effective policy; a policy matches when
//     one of its permissions and one of its principals match;
//   - envoy/source/extensions/filters/common/rbac/matchers.cc: the matchers.
// The request attributes are what Envoy's connection manager leaves for its filters
// (envoy/source/common/http/conn_manager_utility.cc, mutateRequestHeaders: the remote
// address from X-Forwarded-For, the headers it appends, sets or removes).

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	uritemplate "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	rbacFilter     = "envoy.filters.http.rbac"
	jwtAuthnFilter = "envoy.filters.http.jwt_authn"
	extAuthzFilter = "envoy.filters.http.ext_authz"
	// peerPrincipalKey: the filter state istiod's principals use instead of
	// `authenticated` (pilot/pkg/security/authz/model/principal.go), set only for a
	// peer that presented an Istio certificate.
	peerPrincipalKey = "io.istio.peer_principal"
	// defaultSourceAddress: the client's address when the request names none (the
	// local target's clients connect from loopback).
	defaultSourceAddress = "127.0.0.1"
)

// authzRequest is the request as Envoy's RBAC filter sees it.
type authzRequest struct {
	method string
	// path is :path after the connection manager's normalization, query included.
	path string
	// pathNote: why path may not be what Envoy's filters see (reported when a path
	// matcher is evaluated).
	pathNote  string
	authority string
	scheme    string
	// headers: lower-case names, as the connection manager leaves them.
	headers map[string]string
	// unknownHeaders: headers the connection manager sets or removes in ways not
	// modelled here (x-request-id, x-envoy-*...), with why.
	unknownHeaders map[string]string
	// localAddr, localPort: the downstream local address (the gateway pod's address
	// and the listener port the request reached).
	localAddr netip.Addr
	localPort uint32
	// directRemote: the peer of the connection; remote: the client address the
	// connection manager settled on (X-Forwarded-For with trusted hops).
	directRemote netip.Addr
	remote       netip.Addr
	// addrNote: why the addresses may be wrong (reported when an address is matched).
	addrNote string
	// sni: the TLS server name the client sent; empty for plaintext.
	sni string
	// tls: the connection is TLS terminated by this chain (Envoy's connection.ssl()).
	tls bool
	// peerCertUnknown: the chain asks for a client certificate, which the simulation
	// does not have (so `authenticated` and the peer principal are not known).
	peerCertUnknown bool
	// peerPrincipal: the URI SAN of the client's certificate when it is known (an
	// Istio mTLS peer: also Istio's io.istio.peer_principal filter state).
	peerPrincipal string
	// dynamicMetadata: what filters before RBAC wrote, by filter name: jwt_authn the
	// verified token's payload ({"payload": {claims}}, istiod's payload_in_metadata;
	// jwt.go); nil without one: metadata matchers then see no value (Envoy's default
	// Value).
	dynamicMetadata map[string]*structpb.Struct
}

// authzEval collects what an evaluation could not decide exactly.
type authzEval struct {
	req         *authzRequest
	unsupported []string
}

func (e *authzEval) unsupportedf(format string, args ...any) {
	msg := "authz: " + fmt.Sprintf(format, args...)
	for _, u := range e.unsupported {
		if u == msg {
			return
		}
	}
	e.unsupported = append(e.unsupported, msg)
}

// httpManager is the HttpConnectionManager of a filter chain, if any.
func httpManager(fc *listener.FilterChain) *hcmv3.HttpConnectionManager {
	if fc == nil {
		return nil
	}
	for _, f := range fc.GetFilters() {
		var hcm hcmv3.HttpConnectionManager
		if f.GetTypedConfig() != nil && f.GetTypedConfig().UnmarshalTo(&hcm) == nil {
			return &hcm
		}
	}
	return nil
}

// rbacFilters: the connection manager's RBAC filters, in order.
func rbacFilters(hcm *hcmv3.HttpConnectionManager) []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == rbacFilter {
			out = append(out, f)
		}
	}
	return out
}

// evaluateAuthz answers what the RBAC filters of chain fc decide for req; nil when
// the chain's connection manager has no RBAC filter. vh and r (the virtual host and
// route the request matched, either may be nil) are looked at for per-route RBAC
// config only: RBAC runs before the router.
func evaluateAuthz(g *generated, fc *listener.FilterChain, vh *route.VirtualHost, r *route.Route, req Request) (*AuthzResult, []string) {
	hcm := httpManager(fc)
	filters := rbacFilters(hcm)
	if len(filters) == 0 && !hasHTTPFilter(hcm, jwtAuthnFilter) {
		return nil, nil
	}
	e := &authzEval{req: newAuthzRequest(g, fc, hcm, req)}
	for _, why := range connectionManagerNotes(hcm) {
		e.unsupportedf("%s", why)
	}
	e.otherAuthFilters(hcm)
	if hasPerFilterConfig(vh, r, rbacFilter) || hasPerFilterConfig(vh, r, jwtAuthnFilter) {
		e.unsupportedf("per-route RBAC or JWT config (typed_per_filter_config) not evaluated")
	}
	// jwt_authn runs before the RBAC filters (istiod's order: authn, then authz).
	jwt := e.runJwtAuthn(hcm)
	if jwt != nil && jwt.status != jwtOk {
		return &AuthzResult{Filters: len(filters), Denied: true, DeniedBy: "jwt", Status: jwt.httpStatus, Why: jwt.why}, e.unsupported
	}
	res := e.runFilters(filters)
	if res.Denied {
		res.DeniedBy, res.Status = "rbac", 403
	}
	if jwt != nil {
		res.Why = jwt.why + "; " + res.Why
	}
	return res, e.unsupported
}

// hasHTTPFilter: the connection manager runs the HTTP filter `name`.
func hasHTTPFilter(hcm *hcmv3.HttpConnectionManager, name string) bool {
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == name && !f.GetDisabled() {
			return true
		}
	}
	return false
}

// runFilters: Envoy runs the filters in order; the first that refuses answers 403.
func (e *authzEval) runFilters(filters []*hcmv3.HttpFilter) *AuthzResult {
	res := &AuthzResult{Filters: len(filters)}
	var steps []string
	for i, f := range filters {
		step, decided := e.runFilter(i+1, f, res)
		if step != "" {
			steps = append(steps, step)
		}
		if decided {
			break
		}
	}
	switch {
	case res.Denied:
		steps = append(steps, "403 RBAC: access denied")
	case len(steps) == 0:
		steps = append(steps, "no RBAC filter has enforced rules: allowed")
	default:
		steps = append(steps, "allowed")
	}
	res.Why = strings.Join(steps, "; ")
	return res
}

// runFilter evaluates RBAC filter number n; decided: it refused the request.
func (e *authzEval) runFilter(n int, f *hcmv3.HttpFilter, res *AuthzResult) (string, bool) {
	if f.GetDisabled() {
		return fmt.Sprintf("RBAC filter %d is disabled", n), false
	}
	if f.GetConfigDiscovery() != nil {
		e.unsupportedf("RBAC filter %d's config comes from ECDS", n)
		return "", false
	}
	var cfg rbachttp.RBAC
	if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(&cfg) != nil {
		e.unsupportedf("RBAC filter %d's config is not an RBAC config", n)
		return "", false
	}
	if cfg.GetMatcher() != nil {
		e.unsupportedf("RBAC filter %d uses the matcher API, not evaluated", n)
		return "", false
	}
	rules := cfg.GetRules()
	if rules == nil {
		// Only shadow rules (dry-run, CUSTOM's ext_authz hints): no effect on traffic.
		return "", false
	}
	action := rules.GetAction().String()
	policy := e.firstMatchingPolicy(rules)
	switch rules.GetAction() {
	case rbacpb.RBAC_ALLOW:
		res.Action, res.Policy = action, policy
		if policy == "" {
			res.Denied = true
			return fmt.Sprintf("RBAC filter %d (ALLOW): no policy matched", n), true
		}
		return fmt.Sprintf("RBAC filter %d (ALLOW): policy %s matched", n, policy), false
	case rbacpb.RBAC_DENY:
		if policy != "" {
			res.Action, res.Policy, res.Denied = action, policy, true
			return fmt.Sprintf("RBAC filter %d (DENY): policy %s matched", n, policy), true
		}
		return fmt.Sprintf("RBAC filter %d (DENY): no policy matched", n), false
	case rbacpb.RBAC_LOG:
		return fmt.Sprintf("RBAC filter %d (LOG): no effect", n), false
	default:
		e.unsupportedf("RBAC filter %d: action %s not evaluated", n, action)
		return "", false
	}
}

// firstMatchingPolicy: the name of the first policy (in name order, as Envoy's
// engine walks its sorted map) that matches, or "".
func (e *authzEval) firstMatchingPolicy(rules *rbacpb.RBAC) string {
	names := make([]string, 0, len(rules.GetPolicies()))
	for name := range rules.GetPolicies() {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if e.policyMatches(name, rules.GetPolicies()[name]) {
			return name
		}
	}
	return ""
}

// policyMatches: one permission and one principal match (and the condition, which is
// not evaluated).
func (e *authzEval) policyMatches(name string, p *rbacpb.Policy) bool {
	if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
		e.unsupportedf("policy %s: CEL condition not evaluated", name)
	}
	return e.anyPermission(p.GetPermissions()) && e.anyPrincipal(p.GetPrincipals())
}

func (e *authzEval) anyPermission(ps []*rbacpb.Permission) bool {
	for _, p := range ps {
		if e.permission(p) {
			return true
		}
	}
	return false
}

func (e *authzEval) allPermissions(ps []*rbacpb.Permission) bool {
	for _, p := range ps {
		if !e.permission(p) {
			return false
		}
	}
	return true
}

func (e *authzEval) anyPrincipal(ps []*rbacpb.Principal) bool {
	for _, p := range ps {
		if e.principal(p) {
			return true
		}
	}
	return false
}

func (e *authzEval) allPrincipals(ps []*rbacpb.Principal) bool {
	for _, p := range ps {
		if !e.principal(p) {
			return false
		}
	}
	return true
}

// permission: Envoy's Matcher::create(Permission) and each matcher's matches().
func (e *authzEval) permission(p *rbacpb.Permission) bool {
	switch r := p.GetRule().(type) {
	case *rbacpb.Permission_Any:
		return true
	case *rbacpb.Permission_AndRules:
		return e.allPermissions(r.AndRules.GetRules())
	case *rbacpb.Permission_OrRules:
		return e.anyPermission(r.OrRules.GetRules())
	case *rbacpb.Permission_NotRule:
		return !e.permission(r.NotRule)
	case *rbacpb.Permission_Header:
		return e.header(r.Header)
	case *rbacpb.Permission_UrlPath:
		return e.urlPath(r.UrlPath)
	case *rbacpb.Permission_UriTemplate:
		return e.uriTemplate(r.UriTemplate)
	case *rbacpb.Permission_DestinationIp:
		return e.cidr("destination_ip", r.DestinationIp, e.req.localAddr)
	case *rbacpb.Permission_DestinationPort:
		return e.req.localPort == r.DestinationPort
	case *rbacpb.Permission_DestinationPortRange:
		port := int64(e.req.localPort)
		return int64(r.DestinationPortRange.GetStart()) <= port && port < int64(r.DestinationPortRange.GetEnd())
	case *rbacpb.Permission_RequestedServerName:
		return e.stringMatch("requested_server_name", r.RequestedServerName, e.req.sni)
	case *rbacpb.Permission_Metadata:
		return e.metadata(r.Metadata)
	case *rbacpb.Permission_SourcedMetadata:
		return e.sourcedMetadata(r.SourcedMetadata)
	default:
		e.unsupportedf("permission %T not evaluated", r)
		return false
	}
}

// principal: Envoy's Matcher::create(Principal) and each matcher's matches().
func (e *authzEval) principal(p *rbacpb.Principal) bool {
	switch id := p.GetIdentifier().(type) {
	case *rbacpb.Principal_Any:
		return true
	case *rbacpb.Principal_AndIds:
		return e.allPrincipals(id.AndIds.GetIds())
	case *rbacpb.Principal_OrIds:
		return e.anyPrincipal(id.OrIds.GetIds())
	case *rbacpb.Principal_NotId:
		return !e.principal(id.NotId)
	case *rbacpb.Principal_Header:
		return e.header(id.Header)
	case *rbacpb.Principal_UrlPath:
		return e.urlPath(id.UrlPath)
	case *rbacpb.Principal_RemoteIp:
		return e.cidr("remote_ip", id.RemoteIp, e.req.remote)
	case *rbacpb.Principal_DirectRemoteIp:
		return e.cidr("direct_remote_ip", id.DirectRemoteIp, e.req.directRemote)
	case *rbacpb.Principal_SourceIp:
		// The connection's remote address (proxy protocol, never XFF): the direct peer.
		return e.cidr("source_ip", id.SourceIp, e.req.directRemote)
	case *rbacpb.Principal_Authenticated_:
		return e.authenticated(id.Authenticated)
	case *rbacpb.Principal_FilterState:
		return e.filterState(id.FilterState)
	case *rbacpb.Principal_Metadata:
		return e.metadata(id.Metadata)
	case *rbacpb.Principal_SourcedMetadata:
		return e.sourcedMetadata(id.SourcedMetadata)
	default:
		e.unsupportedf("principal %T not evaluated", id)
		return false
	}
}

// header: Envoy's HeaderUtility::matchHeaders (a missing header matches only a
// present_match: false, or true when inverted) over the headers the connection
// manager leaves.
func (e *authzEval) header(h *route.HeaderMatcher) bool {
	name := strings.ToLower(h.GetName())
	if why, ok := e.req.unknownHeaders[name]; ok {
		e.unsupportedf("header %s: %s", name, why)
	}
	if name == ":path" && e.req.pathNote != "" {
		e.unsupportedf("%s", e.req.pathNote)
	}
	v, present := e.req.header(name)
	if !present && !h.GetTreatMissingHeaderAsEmpty() {
		_, isPresent := h.GetHeaderMatchSpecifier().(*route.HeaderMatcher_PresentMatch)
		if h.GetInvertMatch() {
			return isPresent && h.GetPresentMatch()
		}
		return isPresent && !h.GetPresentMatch()
	}
	var ok bool
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *route.HeaderMatcher_ExactMatch:
		ok = s.ExactMatch == "" || v == s.ExactMatch
	case *route.HeaderMatcher_SafeRegexMatch:
		ok = fullMatch(s.SafeRegexMatch.GetRegex(), v)
	case *route.HeaderMatcher_RangeMatch:
		n, err := strconv.ParseInt(v, 10, 64)
		ok = err == nil && s.RangeMatch.GetStart() <= n && n < s.RangeMatch.GetEnd()
	case *route.HeaderMatcher_PresentMatch:
		ok = s.PresentMatch
	case *route.HeaderMatcher_PrefixMatch:
		ok = strings.HasPrefix(v, s.PrefixMatch)
	case *route.HeaderMatcher_SuffixMatch:
		ok = strings.HasSuffix(v, s.SuffixMatch)
	case *route.HeaderMatcher_ContainsMatch:
		ok = strings.Contains(v, s.ContainsMatch)
	case *route.HeaderMatcher_StringMatch:
		ok = e.stringMatch("header "+name, s.StringMatch, v)
	case nil:
		// Envoy's HeaderMatchType::Value with an empty value: any value.
		ok = true
	default:
		e.unsupportedf("header matcher %T not evaluated", s)
	}
	return ok != h.GetInvertMatch()
}

// urlPath: Envoy's Matchers::PathMatcher matches the path without query and fragment
// (PathUtil::removeQueryAndFragment).
func (e *authzEval) urlPath(m *matcher.PathMatcher) bool {
	if e.req.pathNote != "" {
		e.unsupportedf("%s", e.req.pathNote)
	}
	sm := m.GetPath()
	if sm == nil {
		e.unsupportedf("url_path matcher %T not evaluated", m.GetRule())
		return false
	}
	return e.stringMatch("url_path", sm, pathWithoutQuery(e.req.path))
}

// uriTemplate: envoy.path.match.uri_template (UriTemplateMatcher::match: the template's
// regex must match the whole path without query and fragment).
func (e *authzEval) uriTemplate(cfg *core.TypedExtensionConfig) bool {
	if e.req.pathNote != "" {
		e.unsupportedf("%s", e.req.pathNote)
	}
	var t uritemplate.UriTemplateMatchConfig
	if cfg.GetTypedConfig() == nil || cfg.GetTypedConfig().UnmarshalTo(&t) != nil {
		e.unsupportedf("uri_template extension %s not evaluated", cfg.GetTypedConfig().GetTypeUrl())
		return false
	}
	re, err := uriTemplateRegexp(t.GetPathTemplate())
	if err != nil {
		e.unsupportedf("uri_template %q: %v (Envoy rejects it)", t.GetPathTemplate(), err)
		return false
	}
	return re.MatchString(pathWithoutQuery(e.req.path))
}

func (e *authzEval) stringMatch(what string, m *matcher.StringMatcher, v string) bool {
	switch m.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact, *matcher.StringMatcher_Prefix, *matcher.StringMatcher_Suffix,
		*matcher.StringMatcher_Contains, *matcher.StringMatcher_SafeRegex:
		return stringMatches(m, v)
	default:
		e.unsupportedf("%s: string matcher %T not evaluated", what, m.GetMatchPattern())
		return false
	}
}

// cidr: Envoy's IPMatcher (CidrRange::isInRange: same IP version, prefix bits equal).
func (e *authzEval) cidr(what string, r *core.CidrRange, addr netip.Addr) bool {
	if e.req.addrNote != "" && what != "destination_ip" {
		e.unsupportedf("%s", e.req.addrNote)
	}
	prefix, err := cidrPrefix(r)
	if err != nil {
		e.unsupportedf("%s: %v", what, err)
		return false
	}
	return addr.IsValid() && prefix.Contains(addr)
}

func cidrPrefix(r *core.CidrRange) (netip.Prefix, error) {
	a, err := netip.ParseAddr(r.GetAddressPrefix())
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("address_prefix %q is not an IP address", r.GetAddressPrefix())
	}
	bits := int(r.GetPrefixLen().GetValue())
	if bits > a.BitLen() {
		return netip.Prefix{}, fmt.Errorf("prefix_len %d is longer than the address", bits)
	}
	return netip.PrefixFrom(a, bits).Masked(), nil
}

// authenticated: Envoy's AuthenticatedMatcher: no TLS, no match; TLS and no name, a
// match; else the peer certificate's URI SANs, DNS SANs, then subject. A client
// without a certificate has none of them: the subject is "".
func (e *authzEval) authenticated(a *rbacpb.Principal_Authenticated) bool {
	if !e.req.tls {
		return false
	}
	if a.GetPrincipalName() == nil {
		return true
	}
	if e.req.peerCertUnknown {
		e.unsupportedf("authenticated: the client certificate this chain asks for is not known")
		return false
	}
	// The URI SAN first (an Istio certificate has no DNS SAN), then the subject
	// (empty: no certificate, or Istio's).
	if e.req.peerPrincipal != "" && e.stringMatch("authenticated principal_name", a.GetPrincipalName(), e.req.peerPrincipal) {
		return true
	}
	return e.stringMatch("authenticated principal_name", a.GetPrincipalName(), "")
}

// filterState: Envoy's FilterStateMatcher: no object under the key, no match. Istio's
// peer principal is set only for a peer with an Istio certificate.
func (e *authzEval) filterState(m *matcher.FilterStateMatcher) bool {
	if m.GetKey() != peerPrincipalKey {
		e.unsupportedf("filter_state %s not evaluated", m.GetKey())
		return false
	}
	if e.req.peerCertUnknown {
		e.unsupportedf("filter_state %s: the client certificate this chain asks for is not known", m.GetKey())
	}
	if e.req.peerPrincipal == "" {
		return false
	}
	return e.stringMatch("filter_state "+m.GetKey(), m.GetStringMatch(), e.req.peerPrincipal)
}

func (e *authzEval) sourcedMetadata(m *rbacpb.SourcedMetadata) bool {
	if m.GetMetadataSource() != rbacpb.MetadataSource_DYNAMIC {
		e.unsupportedf("sourced_metadata from %s not evaluated", m.GetMetadataSource())
		return false
	}
	return e.metadata(m.GetMetadataMatcher())
}

// metadata: Envoy's Matchers::MetadataMatcher over dynamic metadata: the value at the
// path (Envoy's default Value, no kind, when absent) matched, XOR invert.
func (e *authzEval) metadata(m *matcher.MetadataMatcher) bool {
	switch m.GetFilter() {
	case jwtAuthnFilter:
		// Known: the verified token's payload, or nothing (jwt.go).
	default:
		e.unsupportedf("metadata of %s not evaluated", m.GetFilter())
		return false
	}
	v := metadataValue(e.req.dynamicMetadata[m.GetFilter()], m.GetPath())
	return e.valueMatches(m.GetValue(), v) != m.GetInvert()
}

// metadataValue: Envoy's Config::Metadata::metadataValue; nil when absent.
func metadataValue(s *structpb.Struct, path []*matcher.MetadataMatcher_PathSegment) *structpb.Value {
	if s == nil || len(path) == 0 {
		return nil
	}
	var v *structpb.Value
	for i, seg := range path {
		v = s.GetFields()[seg.GetKey()]
		if v == nil {
			return nil
		}
		if i < len(path)-1 {
			if s = v.GetStructValue(); s == nil {
				return nil
			}
		}
	}
	return v
}

// valueMatches: Envoy's ValueMatcher (envoy/source/common/common/matchers.cc); a nil
// v is a Value with no kind, which nothing matches.
func (e *authzEval) valueMatches(m *matcher.ValueMatcher, v *structpb.Value) bool {
	if v.GetKind() == nil {
		if _, ok := m.GetMatchPattern().(*matcher.ValueMatcher_OrMatch); !ok {
			return false
		}
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcher.ValueMatcher_NullMatch_:
		_, ok := v.GetKind().(*structpb.Value_NullValue)
		return ok
	case *matcher.ValueMatcher_StringMatch:
		s, ok := v.GetKind().(*structpb.Value_StringValue)
		return ok && e.stringMatch("metadata", p.StringMatch, s.StringValue)
	case *matcher.ValueMatcher_BoolMatch:
		b, ok := v.GetKind().(*structpb.Value_BoolValue)
		return ok && b.BoolValue == p.BoolMatch
	case *matcher.ValueMatcher_PresentMatch:
		return p.PresentMatch
	case *matcher.ValueMatcher_ListMatch:
		l, ok := v.GetKind().(*structpb.Value_ListValue)
		if !ok || p.ListMatch.GetOneOf() == nil {
			return false
		}
		for _, item := range l.ListValue.GetValues() {
			if e.valueMatches(p.ListMatch.GetOneOf(), item) {
				return true
			}
		}
		return false
	case *matcher.ValueMatcher_OrMatch:
		for _, vm := range p.OrMatch.GetValueMatchers() {
			if e.valueMatches(vm, v) {
				return true
			}
		}
		return false
	default:
		e.unsupportedf("metadata value matcher %T not evaluated", p)
		return false
	}
}

// otherAuthFilters notes the connection manager's other security filters: ext_authz
// (CUSTOM policies) is not evaluated (jwt_authn is: jwt.go).
func (e *authzEval) otherAuthFilters(hcm *hcmv3.HttpConnectionManager) {
	for _, f := range hcm.GetHttpFilters() {
		if f.GetName() == extAuthzFilter {
			e.unsupportedf("ext_authz (CUSTOM action) not evaluated")
		}
	}
}

func queryParams(path string) map[string]bool {
	out := map[string]bool{}
	_, q, ok := strings.Cut(path, "?")
	if !ok {
		return out
	}
	q, _, _ = strings.Cut(q, "#")
	for _, kv := range strings.Split(q, "&") {
		k, _, _ := strings.Cut(kv, "=")
		out[k] = true
	}
	return out
}

// connectionManagerNotes: connection manager settings that change what the filters
// see and are not modelled.
func connectionManagerNotes(hcm *hcmv3.HttpConnectionManager) []string {
	var out []string
	if len(hcm.GetOriginalIpDetectionExtensions()) > 0 {
		out = append(out, "original_ip_detection_extensions not evaluated")
	}
	if len(hcm.GetEarlyHeaderMutationExtensions()) > 0 {
		out = append(out, "early_header_mutation_extensions not evaluated")
	}
	if hcm.GetSchemeHeaderTransformation() != nil {
		out = append(out, "scheme_header_transformation not evaluated")
	}
	if hcm.GetPathNormalizationOptions() != nil || hcm.GetTypedHeaderValidationConfig() != nil {
		out = append(out, "path normalization options / header validation not evaluated")
	}
	return out
}

// hasPerFilterConfig: the virtual host or route (either may be nil) configures
// filter name for itself (typed_per_filter_config).
func hasPerFilterConfig(vh *route.VirtualHost, r *route.Route, name string) bool {
	return vh.GetTypedPerFilterConfig()[name] != nil || r.GetTypedPerFilterConfig()[name] != nil
}

// newAuthzRequest: the attributes Envoy's filters see for req on chain fc.
func newAuthzRequest(g *generated, fc *listener.FilterChain, hcm *hcmv3.HttpConnectionManager, req Request) *authzRequest {
	a := &authzRequest{
		method:         req.Method,
		headers:        map[string]string{},
		unknownHeaders: map[string]string{},
		localPort:      uint32(req.Port),
		// jwt.go fills it when a token verifies.
		dynamicMetadata: nil,
	}
	if a.method == "" {
		a.method = "GET"
	}
	for k, v := range req.Headers {
		a.headers[strings.ToLower(k)] = v
	}
	if g != nil && g.proxy != nil && len(g.proxy.IPAddresses) > 0 {
		a.localAddr, _ = netip.ParseAddr(g.proxy.IPAddresses[0])
	}
	a.tls, a.peerCertUnknown = downstreamTLS(fc)
	if a.tls {
		a.sni = hostOnly(req.Host)
		if req.SNI != "" {
			a.sni = req.SNI
		}
		if req.PeerPrincipal != "" {
			a.peerCertUnknown, a.peerPrincipal = false, req.PeerPrincipal
		}
	}
	a.path, a.pathNote = filterPath(hcm, req.Path)
	a.authority = filterAuthority(hcm, req.Host, req.Port)
	a.addresses(hcm, req.SourceAddress)
	a.forwardingHeaders(hcm)
	a.scheme = a.headers["x-forwarded-proto"]
	if !strings.EqualFold(a.scheme, "http") && !strings.EqualFold(a.scheme, "https") {
		a.scheme = map[bool]string{true: "https", false: "http"}[a.tls]
	}
	return a
}

// header: a request header by lower-case name; pseudo headers and Host (Envoy keeps
// Host as :authority and finds it under either name).
func (a *authzRequest) header(name string) (string, bool) {
	switch name {
	case ":method":
		return a.method, true
	case ":path":
		return a.path, true
	case ":authority", "host":
		return a.authority, a.authority != ""
	case ":scheme":
		return a.scheme, true
	}
	v, ok := a.headers[name]
	return v, ok
}

// downstreamTLS: the chain terminates TLS; and it asks the client for a certificate.
func downstreamTLS(fc *listener.FilterChain) (bool, bool) {
	ts := fc.GetTransportSocket()
	if ts == nil {
		return false, false
	}
	var ctx tlsv3.DownstreamTlsContext
	if ts.GetTypedConfig() == nil || ts.GetTypedConfig().UnmarshalTo(&ctx) != nil {
		return true, true
	}
	return true, ctx.GetRequireClientCertificate().GetValue()
}

// addresses: the direct peer (the request's source address) and the remote address
// the connection manager settles on (ConnectionManagerUtility::mutateRequestHeaders):
// with use_remote_address, the Nth address from the right of the incoming
// X-Forwarded-For for xff_num_trusted_hops N > 0 (Utility::getLastAddressFromXFF with
// N-1 skipped), else (or when that is not an address) the direct peer; without it, the
// default XFF detection with N skipped, else the direct peer.
func (a *authzRequest) addresses(hcm *hcmv3.HttpConnectionManager, source string) {
	if source == "" {
		source = defaultSourceAddress
	}
	direct, err := netip.ParseAddr(source)
	if err != nil || direct.Zone() != "" {
		a.addrNote = fmt.Sprintf("source_address %q is not an IP address", source)
	}
	a.directRemote, a.remote = direct, direct
	xff, hasXFF := a.headers["x-forwarded-for"]
	n := hcm.GetXffNumTrustedHops()
	if hcm.GetUseRemoteAddress().GetValue() {
		if n > 0 && hasXFF {
			if addr, ok := lastAddressFromXFF(xff, n-1); ok {
				a.remote = addr
			}
		}
	} else if hasXFF {
		if addr, ok := lastAddressFromXFF(xff, n); ok {
			a.remote = addr
		}
	}
}

// lastAddressFromXFF: Envoy's Utility::getLastAddressFromXFF: skip the last
// numToSkip comma-separated entries, take the one before (trimmed), which must be a
// plain IP address.
func lastAddressFromXFF(xff string, numToSkip uint32) (netip.Addr, bool) {
	s := xff
	for i := uint32(0); i < numToSkip; i++ {
		c := strings.LastIndexByte(s, ',')
		if c < 0 {
			return netip.Addr{}, false
		}
		s = s[:c]
	}
	if c := strings.LastIndexByte(s, ','); c >= 0 && c+1 < len(s) {
		s = s[c+1:]
	}
	s = strings.Trim(s, " \t\f\v\n\r")
	addr, err := netip.ParseAddr(s)
	if err != nil || addr.Zone() != "" {
		return netip.Addr{}, false
	}
	return addr, true
}

// forwardingHeaders: the headers the connection manager appends, sets or removes
// before the filters run (mutateRequestHeaders), as far as they are known.
func (a *authzRequest) forwardingHeaders(hcm *hcmv3.HttpConnectionManager) {
	n := hcm.GetXffNumTrustedHops()
	useRemote := hcm.GetUseRemoteAddress().GetValue()
	if useRemote && !hcm.GetSkipXffAppend() && a.directRemote.IsValid() {
		// A loopback peer is recorded as Envoy's local address (the gateway pod's).
		appended := a.directRemote
		if appended.IsLoopback() && a.localAddr.IsValid() {
			appended = a.localAddr
		}
		if old, ok := a.headers["x-forwarded-for"]; ok && old != "" {
			a.headers["x-forwarded-for"] = old + "," + appended.String()
		} else {
			a.headers["x-forwarded-for"] = appended.String()
		}
	}
	_, hasProto := a.headers["x-forwarded-proto"]
	if (useRemote && n == 0) || !hasProto {
		a.headers["x-forwarded-proto"] = map[bool]string{true: "https", false: "http"}[a.tls]
	}
	switch {
	case hcm.GetForwardClientCertDetails() == hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
	case a.peerCertUnknown:
		a.unknownHeaders["x-forwarded-client-cert"] = "set from the client certificate, not known"
	default:
		delete(a.headers, "x-forwarded-client-cert") // no client certificate: removed
	}
	for _, h := range []string{"keep-alive", "proxy-connection", "transfer-encoding"} {
		delete(a.headers, h)
	}
	a.unknownHeaders["x-request-id"] = "generated by the connection manager"
	a.unknownHeaders["connection"] = "hop-by-hop, kept only for upgrades"
	a.unknownHeaders["upgrade"] = "hop-by-hop, kept only for upgrades"
	for name := range a.headers {
		if strings.HasPrefix(name, "x-envoy-") {
			a.unknownHeaders[name] = "Envoy's own headers are set or removed by the connection manager"
		}
	}
	for _, name := range []string{"x-envoy-internal", "x-envoy-external-address", "x-envoy-decorator-operation", "x-envoy-peer-metadata", "x-envoy-peer-metadata-id"} {
		a.unknownHeaders[name] = "Envoy's own headers are set or removed by the connection manager"
	}
	if hcm.GetAppendXForwardedPort() {
		a.unknownHeaders["x-forwarded-port"] = "append_x_forwarded_port not modelled"
	}
	if hcm.GetVia() != "" {
		a.unknownHeaders["via"] = "via not modelled"
	}
	if hcm.GetAddUserAgent().GetValue() {
		a.unknownHeaders["user-agent"] = "add_user_agent not modelled"
	}
}

// filterAuthority: :authority after the connection manager's host normalization
// (maybeNormalizeHost: strip_trailing_host_dot, then strip_any_host_port or
// strip_matching_host_port with the listener port).
func filterAuthority(hcm *hcmv3.HttpConnectionManager, host string, port int) string {
	if hcm.GetStripTrailingHostDot() {
		host = stripTrailingHostDot(host)
	}
	switch {
	case hcm.GetStripAnyHostPort():
		host = stripHostPort(host, -1)
	case hcm.GetStripMatchingHostPort():
		host = stripHostPort(host, port)
	}
	return host
}

// stripHostPort: HeaderUtility::stripPortFromHost; port -1: any port.
func stripHostPort(host string, port int) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.LastIndexByte(host, ']') > i {
		return host
	}
	p, err := strconv.ParseUint(host[i+1:], 10, 32)
	if err != nil || (port >= 0 && int(p) != port) {
		return host
	}
	return host[:i]
}

// stripTrailingHostDot: HeaderUtility::stripTrailingHostDot.
func stripTrailingHostDot(host string) string {
	i := strings.LastIndexByte(host, '.')
	switch {
	case i < 0:
		return host
	case i == len(host)-1:
		return host[:i]
	case host[i+1] == ':':
		return host[:i] + host[i+1:]
	}
	return host
}

// filterPath: :path as the filters see it. With normalize_path Envoy canonicalizes
// the path (RFC 3986 dot segments, percent-encodings...), which is not modelled: a
// path it could change gets a note; merge_slashes is applied.
func filterPath(hcm *hcmv3.HttpConnectionManager, path string) (string, string) {
	p, query, hasQuery := strings.Cut(path, "?")
	note := ""
	switch {
	case strings.ContainsAny(p, "#"):
		note = "the path has a fragment, which Envoy strips or rejects: not modelled"
	case strings.Contains(p, "%") && !escapesKept(hcm, p):
		note = "percent-encodings in the path (Envoy's normalization and escaped-slash handling) not modelled"
	case hcm.GetNormalizePath().GetValue() && !canonicalPath(p):
		note = "Envoy's normalize_path would change this path: not modelled"
	}
	if hcm.GetMergeSlashes() && strings.Contains(p, "//") {
		p = mergeSlashes(p)
	}
	if hasQuery {
		return p + "?" + query, note
	}
	return p, note
}

var canonicalPathChars = regexp.MustCompile(`^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*$`)

// escapesKept: every percent-encoding of p is one the connection manager leaves as
// it is (meshcheck hands the oracle paths already normalized): a well-formed escape
// of a character that is not unreserved when normalize_path decodes those, and not an
// escaped slash or backslash when the connection manager unescapes them.
func escapesKept(hcm *hcmv3.HttpConnectionManager, p string) bool {
	unescapes := hcm.GetPathWithEscapedSlashesAction() == hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD ||
		hcm.GetPathWithEscapedSlashesAction() == hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			continue
		}
		if i+2 >= len(p) {
			return false
		}
		b, err := strconv.ParseUint(p[i+1:i+3], 16, 8)
		if err != nil {
			return false
		}
		c := byte(b)
		unreserved := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0
		if (unreserved && hcm.GetNormalizePath().GetValue()) || (unescapes && (c == '/' || c == '\\')) {
			return false
		}
		i += 2
	}
	return true
}

// canonicalPath: a path Envoy's normalization leaves as is: absolute, plain
// characters, no "." or ".." segments.
func canonicalPath(p string) bool {
	if !strings.HasPrefix(p, "/") || !canonicalPathChars.MatchString(p) {
		return false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// mergeSlashes: PathTransformer::mergeSlashes.
func mergeSlashes(p string) string {
	var segs []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			segs = append(segs, s)
		}
	}
	prefix, suffix := "", ""
	if strings.HasPrefix(p, "/") {
		prefix = "/"
	}
	if strings.HasSuffix(p, "/") {
		suffix = "/"
	}
	return prefix + strings.Join(segs, "/") + suffix
}

// pathWithoutQuery: PathUtil::removeQueryAndFragment.
func pathWithoutQuery(p string) string {
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		return p[:i]
	}
	return p
}

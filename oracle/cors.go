package main

import (
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// corsFilter is the name istiod gives Envoy's CORS filter and its per-route config
// (pilot/pkg/networking/core/route/route.go, TranslateRoute: TypedPerFilterConfig
// [wellknown.CORS]; the filter is in every gateway connection manager,
// listener_builder.go buildHTTPConnectionManager).
const corsFilter = "envoy.filters.http.cors"

// corsPreflightAnswer says whether Envoy's CORS filter answers req itself (200, a
// local reply) instead of letting the route forward it, as
// envoy/source/extensions/filters/http/cors/cors_filter.cc CorsFilter::decodeHeaders
// does: with the route's policy (then the virtual host's) enabled, an OPTIONS request
// with a non-empty Origin and Access-Control-Request-Method is a preflight; one
// whose origin is allowed (isOriginAllowed: a matcher matching "*" or the origin) is
// answered, one whose origin is not is forwarded unless forward_not_matching_preflights
// is false. Only a connection manager that runs the CORS filter does any of this
// (corsFilterIn). The second value names what it could not evaluate.
func corsPreflightAnswer(g *generated, listenerName, chainName string, vh *route.VirtualHost, r *route.Route, req Request) (bool, string) {
	policies := corsPolicies(vh, r)
	if len(policies) == 0 || !corsFilterIn(g, listenerName, chainName) {
		return false, ""
	}
	if fe := policies[0].GetFilterEnabled(); fe != nil {
		if fe.GetRuntimeKey() != "" || fe.GetDefaultValue().GetDenominator() != 0 {
			return false, "CORS filter_enabled other than a plain 100% not evaluated"
		}
		if fe.GetDefaultValue().GetNumerator() < 100 {
			return false, "CORS filter_enabled below 100% not evaluated"
		}
	}
	origin, _ := requestHeader(req, "origin")
	method, _ := requestHeader(req, ":method")
	acrm, _ := requestHeader(req, "access-control-request-method")
	if origin == "" || method != "OPTIONS" || acrm == "" {
		return false, ""
	}
	if originAllowed(policies, origin) {
		return true, ""
	}
	for _, p := range policies {
		if f := p.GetForwardNotMatchingPreflights(); f != nil {
			return !f.GetValue(), ""
		}
	}
	return false, ""
}

// corsPolicies: the route's policy first, then the virtual host's
// (CorsFilter::initializeCorsPolicies).
func corsPolicies(vh *route.VirtualHost, r *route.Route) []*corsv3.CorsPolicy {
	var out []*corsv3.CorsPolicy
	for _, raw := range []*anypb.Any{r.GetTypedPerFilterConfig()[corsFilter], vh.GetTypedPerFilterConfig()[corsFilter]} {
		var p corsv3.CorsPolicy
		if raw != nil && raw.UnmarshalTo(&p) == nil {
			out = append(out, &p)
		}
	}
	return out
}

// originAllowed: the first policy with allowed origins decides
// (CorsFilter::allowOrigins, isOriginAllowed).
func originAllowed(policies []*corsv3.CorsPolicy, origin string) bool {
	for _, p := range policies {
		if len(p.GetAllowOriginStringMatch()) == 0 {
			continue
		}
		for _, m := range p.GetAllowOriginStringMatch() {
			if stringMatches(m, "*") || stringMatches(m, origin) {
				return true
			}
		}
		return false
	}
	return false
}

// corsFilterIn: the HttpConnectionManager of the matched filter chain lists Envoy's
// CORS filter among its http_filters (istiod puts it in every one it builds:
// listener_builder.go buildHTTPConnectionManager, "TypedPerFilterConfig in route
// needs these filters"); without the filter a route's CORS config does nothing.
func corsFilterIn(g *generated, listenerName, chainName string) bool {
	for _, l := range g.listeners {
		if l.GetName() != listenerName {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			if fc.GetName() == chainName && hcmHasFilter(fc, corsFilter) {
				return true
			}
		}
	}
	return false
}

func hcmHasFilter(fc *listener.FilterChain, name string) bool {
	for _, f := range fc.GetFilters() {
		var hcm hcmv3.HttpConnectionManager
		if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
			continue
		}
		for _, hf := range hcm.GetHttpFilters() {
			if hf.GetName() == name {
				return true
			}
		}
	}
	return false
}

package main

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"istio.io/istio/pilot/pkg/simulation"
)

// simulate answers one request. Listener, filter chain and virtual host selection are
// Istio's own simulation (pilot/pkg/simulation/traffic.go, Simulation.Run). Its route
// matching looks at the path only (matchRoute: "TODO this only handles path"), so the
// route within the virtual host is chosen here with Envoy's full RouteMatch semantics
// (path, case sensitivity, headers incl. :method/:authority/:scheme, query parameters)
// over the routes istiod generated.
func simulate(g *generated, req Request) SimResult {
	res := SimResult{ID: req.ID, Gateway: req.Gateway}
	if g == nil {
		res.Error = "no such gateway pod in the input: " + req.Gateway
		return res
	}
	r, fc, err := runIstioSimulation(g, req)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	res.Listener, res.FilterChain = r.ListenerMatched, r.FilterChainMatched
	res.RouteConfig, res.VirtualHost = r.RouteConfigMatched, r.VirtualHostMatched
	if r.Error != nil && !errors.Is(r.Error, simulation.ErrNoRoute) {
		res.Error = r.Error.Error()
		if reachedFilters(r.Error) {
			res.setAuthz(g, fc, nil, nil, req)
		}
		return res
	}
	vh := findVirtualHost(g.routes, r.RouteConfigMatched, r.VirtualHostMatched)
	if vh == nil {
		res.Error = "virtual host " + r.VirtualHostMatched + " not found in route " + r.RouteConfigMatched
		return res
	}
	idx, unsupported := matchRoute(vh, req)
	res.Unsupported = unsupported
	if idx < 0 {
		res.Error = simulation.ErrNoRoute.Error()
		res.setAuthz(g, fc, vh, nil, req)
		return res
	}
	res.Route = describeRoute(g, vh.Routes[idx], idx, &req)
	res.setAuthz(g, fc, vh, vh.Routes[idx], req)
	answered, why := corsPreflightAnswer(g, r.ListenerMatched, r.FilterChainMatched, vh, vh.Routes[idx], req)
	if why != "" {
		res.Unsupported = append(res.Unsupported, why)
	}
	if answered {
		// The CORS filter runs before the router: the route's action is not taken.
		res.Route.Action = "cors_preflight"
		res.Route.DirectResponse = &DirectResponse{Status: 200}
		res.Route.Destinations = nil
	}
	return res
}

// reachedFilters: the simulation stopped after the connection manager's filters ran
// (no virtual host: the router's 404; require_tls: its 301), so RBAC decided first.
func reachedFilters(err error) bool {
	return errors.Is(err, simulation.ErrNoVirtualHost) || errors.Is(err, simulation.ErrTLSRedirect)
}

// setAuthz records what the RBAC filters of the matched chain decide (rbac.go).
func (res *SimResult) setAuthz(g *generated, fc *listener.FilterChain, vh *route.VirtualHost, r *route.Route, req Request) {
	authz, unsupported := evaluateAuthz(g, fc, vh, r, req)
	res.Authz = authz
	res.Unsupported = append(res.Unsupported, unsupported...)
}

// runIstioSimulation runs Istio's simulation of req at gateway g (runCapturingChain).
func runIstioSimulation(g *generated, req Request) (simulation.Result, *listener.FilterChain, error) {
	sim := &simulation.Simulation{Listeners: g.listeners, Clusters: g.clusters, Routes: g.routes}
	headers := http.Header{}
	for k, v := range req.Headers {
		headers.Set(k, v)
	}
	call := simulation.Call{
		Address:    g.proxy.IPAddresses[0],
		Port:       req.Port,
		Path:       req.Path,
		Protocol:   simulation.HTTP,
		HostHeader: req.Host,
		Headers:    headers,
		CallMode:   simulation.CallModeGateway,
	}
	if req.Scheme == "https" {
		call.TLS = simulation.TLS
		call.Sni = hostOnly(req.Host)
	}
	return runCapturingChain(sim, call)
}

// runCapturingChain runs Istio's simulation of call. The simulation reports failures
// through a testing.T it does not have here, so a failure inside it is turned into
// an error. It also returns the filter chain the simulation picked (nil when none was
// accepted), caught through its filter chain validation hook.
func runCapturingChain(sim *simulation.Simulation, call simulation.Call) (r simulation.Result, fc *listener.FilterChain, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("Istio's simulation could not evaluate this request: %v", p)
		}
	}()
	call.CustomListenerValidations = append(call.CustomListenerValidations,
		func(matched *listener.FilterChain) error {
			fc = matched
			return nil
		})
	return sim.Run(call), fc, nil
}

func findVirtualHost(rcs []*route.RouteConfiguration, rcName, vhName string) *route.VirtualHost {
	for _, rc := range rcs {
		if rc.Name != rcName {
			continue
		}
		for _, vh := range rc.VirtualHosts {
			if vh.Name == vhName {
				return vh
			}
		}
	}
	return nil
}

// describeRoute summarises route r; with req (a request it matched) it also says
// which path the backend sees.
func describeRoute(g *generated, r *route.Route, idx int, req *Request) *RouteResult {
	out := &RouteResult{Name: r.Name, Index: idx, Match: toJSON(r.Match), Config: routeConfigSource(r), Envoy: toJSON(r)}
	switch a := r.Action.(type) {
	case *route.Route_Route:
		out.Action = "route"
		describeRouteAction(g, a.Route, r, req, out)
	case *route.Route_Redirect:
		out.Action = "redirect"
		out.Redirect = toJSON(a.Redirect)
	case *route.Route_DirectResponse:
		out.Action = "direct_response"
		out.DirectResponse = &DirectResponse{Status: a.DirectResponse.Status}
		if b := a.DirectResponse.GetBody(); b != nil {
			out.DirectResponse.Body = b.GetInlineString() + string(b.GetInlineBytes())
		}
	default:
		out.Action = fmt.Sprintf("%T", a)
	}
	return out
}

func describeRouteAction(g *generated, a *route.RouteAction, r *route.Route, req *Request, out *RouteResult) {
	if a.PrefixRewrite != "" {
		p := a.PrefixRewrite
		out.PrefixRewrite = &p
	}
	if rr := a.RegexRewrite; rr != nil {
		out.RegexRewrite = &RegexRewrite{Pattern: rr.GetPattern().GetRegex(), Substitution: rr.Substitution}
	}
	if req != nil {
		out.RewrittenPath = rewrittenPath(r, a, req.Path)
	}
	out.HostRewrite = a.GetHostRewriteLiteral()
	out.ClusterNotFoundStatus = clusterNotFoundStatus(a.ClusterNotFoundResponseCode)
	switch c := a.ClusterSpecifier.(type) {
	case *route.RouteAction_Cluster:
		out.Destinations = []Destination{destination(g, c.Cluster, 100)}
	case *route.RouteAction_WeightedClusters:
		for _, wc := range c.WeightedClusters.Clusters {
			out.Destinations = append(out.Destinations, destination(g, wc.Name, wc.GetWeight().GetValue()))
		}
	}
}

// clusterNotFoundStatus: envoy/source/common/router/router.cc (Filter::decodeHeaders,
// a route whose cluster is not found) answers with the route's
// cluster_not_found_response_code.
func clusterNotFoundStatus(c route.RouteAction_ClusterNotFoundResponseCode) uint32 {
	switch c {
	case route.RouteAction_NOT_FOUND:
		return http.StatusNotFound
	case route.RouteAction_INTERNAL_SERVER_ERROR:
		return http.StatusInternalServerError
	default:
		return http.StatusServiceUnavailable
	}
}

func routeConfigSource(r *route.Route) string {
	md := r.GetMetadata().GetFilterMetadata()["istio"]
	if md == nil {
		return ""
	}
	return md.GetFields()["config"].GetStringValue()
}

// rewrittenPath is the :path Envoy forwards (RouteEntryImplBase::finalizePathHeader):
// prefix_rewrite replaces the matched prefix (the whole path for exact and regex
// matches), regex_rewrite substitutes over the path without its query; the query
// string is kept.
func rewrittenPath(r *route.Route, a *route.RouteAction, path string) string {
	p, query := path, ""
	if i := strings.IndexByte(path, '?'); i >= 0 {
		p, query = path[:i], path[i:]
	}
	if a.PrefixRewrite != "" {
		if pre, ok := r.Match.PathSpecifier.(*route.RouteMatch_Prefix); ok && len(path) >= len(pre.Prefix) {
			return a.PrefixRewrite + path[len(pre.Prefix):]
		}
		if pre, ok := r.Match.PathSpecifier.(*route.RouteMatch_PathSeparatedPrefix); ok && len(path) >= len(pre.PathSeparatedPrefix) {
			return a.PrefixRewrite + path[len(pre.PathSeparatedPrefix):]
		}
		return a.PrefixRewrite + query
	}
	if rr := a.RegexRewrite; rr != nil {
		re, err := regexp.Compile(rr.GetPattern().GetRegex())
		if err != nil {
			return path
		}
		return re.ReplaceAllString(p, envoySubstitution(rr.Substitution)) + query
	}
	return path
}

var backref = regexp.MustCompile(`\\(\d)`)

// envoySubstitution turns RE2/Envoy `\1` references into Go's `${1}`.
func envoySubstitution(s string) string {
	s = strings.ReplaceAll(s, "$", "$$")
	return backref.ReplaceAllString(s, `$${$1}`)
}

func destination(g *generated, name string, weight uint32) Destination {
	d := Destination{Cluster: name, Weight: weight, Endpoints: []Endpoint{}}
	for _, c := range g.clusters {
		if c.Name == name {
			d.Exists = true
			d.TLS, d.SNI = upstreamTLS(c)
		}
	}
	for _, cla := range g.endpoints {
		if cla.ClusterName != name {
			continue
		}
		for _, le := range cla.Endpoints {
			for _, e := range le.LbEndpoints {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				mode := e.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue()
				d.Endpoints = append(d.Endpoints, Endpoint{Address: sa.GetAddress(), Port: sa.GetPortValue(), TLSMode: mode})
			}
		}
	}
	sort.Slice(d.Endpoints, func(i, j int) bool { return d.Endpoints[i].Address < d.Endpoints[j].Address })
	return d
}

// upstreamTLS summarises the cluster's transport socket(s): istiod writes
// ISTIO_MUTUAL as a TLS socket with the "default" SDS certificate, and auto mTLS as
// transport_socket_matches on the endpoint's tlsMode metadata
// (pilot/pkg/networking/core/cluster_tls.go).
func upstreamTLS(c *cluster.Cluster) (string, string) {
	if ts := c.GetTransportSocket(); ts != nil && ts.Name == "envoy.transport_sockets.tls" {
		return tlsMode(ts.GetTypedConfig())
	}
	for _, m := range c.GetTransportSocketMatches() {
		if m.GetMatch().GetFields()["tlsMode"].GetStringValue() == "istio" {
			_, sni := tlsMode(m.GetTransportSocket().GetTypedConfig())
			return "AUTO", sni
		}
	}
	return "DISABLE", ""
}

func tlsMode(raw *anypb.Any) (string, string) {
	var ctx tlsv3.UpstreamTlsContext
	if err := raw.UnmarshalTo(&ctx); err != nil {
		return "TLS (unreadable)", ""
	}
	certs := ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()
	if len(certs) == 1 && certs[0].Name == "default" {
		return "ISTIO_MUTUAL", ctx.Sni
	}
	if len(certs) > 0 {
		return "MUTUAL", ctx.Sni
	}
	return "SIMPLE", ctx.Sni
}

func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		return h[:i]
	}
	return h
}

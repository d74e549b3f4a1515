package main

// The oracle's input and output, as JSON. meshcheck writes the input (see
// src/oracle/input.rs): the fixtures' Kubernetes and Istio manifests as written,
// Deployments replaced by the pods meshcheck plans for them (with EndpointSlices, as
// the endpoint-slice controller would make), the gateway pods to generate config for,
// and the requests to simulate.

// Input is what meshcheck hands the oracle.
type Input struct {
	// KubeYAML: Namespaces, Services, ServiceAccounts, Pods, EndpointSlices, and the
	// Gateway API objects (gateway.networking.k8s.io; see gatewayapi.go).
	KubeYAML string `json:"kube_yaml"`
	// IstioDocs: the fixtures' Istio documents, as written, one per object.
	IstioDocs []IstioDoc `json:"istio_docs"`
	// Sources maps "Kind/namespace/name" to "file:line" for messages.
	Sources  map[string]string `json:"sources"`
	Gateways []ProxyInput      `json:"gateways"`
	// Sidecars: the workload pods with a sidecar whose inbound security filters are
	// compared (sidecar.go).
	Sidecars []ProxyInput `json:"sidecars,omitempty"`
	Requests []Request    `json:"requests"`
	// SidecarRequests: each request's hops to the pods of Sidecars, as meshcheck's
	// simulation has the gateway send them (sidecar.go sidecarVerdict).
	SidecarRequests []SidecarRequest `json:"sidecar_requests,omitempty"`
	// MeshConfig: the `mesh` key of the fixtures' istio ConfigMap (YAML), over
	// Istio's defaults; empty: the defaults.
	MeshConfig string `json:"mesh_config,omitempty"`
}

// IstioDoc is one Istio object: its key ("Kind/namespace/name") and its document.
type IstioDoc struct {
	Key  string `json:"key"`
	YAML string `json:"yaml"`
}

// ProxyInput is one gateway pod.
type ProxyInput struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	IP        string            `json:"ip"`
	Labels    map[string]string `json:"labels"`
	// ServiceAccount, for the proxy's identity.
	ServiceAccount string `json:"service_account"`
	// ProxyConfig: the pod's proxy.istio.io/config annotation (YAML), which
	// pilot-agent merges over meshConfig.defaultConfig and sends as node metadata.
	ProxyConfig string `json:"proxy_config,omitempty"`
}

// Request is one request to simulate at a gateway pod.
type Request struct {
	ID string `json:"id"`
	// Gateway is "namespace/name" of the gateway pod.
	Gateway string `json:"gateway"`
	// Port is the port the request reaches inside the pod (the Service's targetPort).
	Port    int               `json:"port"`
	Method  string            `json:"method"`
	Scheme  string            `json:"scheme"`
	Host    string            `json:"host"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	// SourceAddress: the address the client connects from (Envoy's direct remote
	// address); "" for 127.0.0.1.
	SourceAddress string `json:"source_address,omitempty"`
	// PeerPrincipal: the URI SAN of the client's certificate on an mTLS connection
	// (a gateway's SPIFFE identity at a sidecar); "" when not known.
	PeerPrincipal string `json:"peer_principal,omitempty"`
	// SNI: the TLS server name the client sends; "" for the host's.
	SNI string `json:"sni,omitempty"`
}

// SidecarRequest is one request as a gateway sends it to a workload pod's sidecar.
type SidecarRequest struct {
	ID string `json:"id"`
	// Pod is "namespace/name" of a pod of Input.Sidecars.
	Pod  string `json:"pod"`
	Port int    `json:"port"`
	// MTLS: Istio mTLS with PeerPrincipal's certificate; else plaintext.
	MTLS          bool              `json:"mtls"`
	PeerPrincipal string            `json:"peer_principal,omitempty"`
	Method        string            `json:"method"`
	Host          string            `json:"host"`
	Path          string            `json:"path"`
	Headers       map[string]string `json:"headers"`
	SNI           string            `json:"sni,omitempty"`
	// SourceAddress: the gateway pod's address.
	SourceAddress string `json:"source_address"`
}

// SidecarVerdict is what a sidecar's inbound security filters decide for one
// SidecarRequest.
type SidecarVerdict struct {
	ID string `json:"id"`
	// Chain: the inbound filter chain that took the connection.
	Chain string `json:"chain,omitempty"`
	// Error: why no chain took it.
	Error       string       `json:"error,omitempty"`
	Authz       *AuthzResult `json:"authz,omitempty"`
	Unsupported []string     `json:"unsupported,omitempty"`
}

// Output is what the oracle prints.
type Output struct {
	Istio Build `json:"istio"`
	// Rejected: inputs istiod would not take (parse errors, validation errors,
	// unknown kinds), each with its source.
	Rejected []Rejection `json:"rejected"`
	// Warnings: validation warnings istiod's webhook would print.
	Warnings    []Rejection     `json:"warnings"`
	Gateways    []GatewayConfig `json:"gateways"`
	Simulations []SimResult     `json:"simulations"`
	// Statuses: the status istiod's gateway controller writes on each Gateway API
	// object (gatewaystatus.go); empty without Gateway API input.
	Statuses []ObjectStatus `json:"statuses"`
	// Sidecars: the inbound HTTP connection managers of each asked sidecar
	// (sidecar.go).
	Sidecars []SidecarConfig `json:"sidecars"`
	// SidecarVerdicts: one per Input.SidecarRequests.
	SidecarVerdicts []SidecarVerdict `json:"sidecar_verdicts"`
}

// Build says what produced the answer.
type Build struct {
	// Release is the Istio release this build stands for.
	Release string `json:"release"`
	// Module is the istio.io/istio module version compiled in.
	Module string `json:"module"`
	// Features: pilot feature flags in effect that change generated config.
	Features map[string]any `json:"features"`
}

// Rejection names an input the oracle did not take, and why.
type Rejection struct {
	Object string `json:"object"`
	Source string `json:"source,omitempty"`
	Reason string `json:"reason"`
}

// GatewayConfig is what istiod would send one gateway pod, in Envoy's JSON.
type GatewayConfig struct {
	Pod string `json:"pod"`
	// RouteTables and Clusters summarise Routes and Clusters (below) for comparison.
	RouteTables    []RouteTable  `json:"route_tables"`
	ClusterSummary []Destination `json:"cluster_summary"`
	Listeners      []any         `json:"listeners"`
	Routes         []any         `json:"routes"`
	Clusters       []any         `json:"clusters"`
	Endpoints      []any         `json:"endpoints"`
}

// RouteTable is one route configuration, summarised.
type RouteTable struct {
	Name         string        `json:"name"`
	VirtualHosts []VirtualHost `json:"virtual_hosts"`
}

// VirtualHost is one virtual host, summarised.
type VirtualHost struct {
	Name    string        `json:"name"`
	Domains []string      `json:"domains"`
	Routes  []RouteResult `json:"routes"`
	// RequireTLS is Envoy's require_tls ("NONE", "EXTERNAL_ONLY", "ALL").
	RequireTLS string `json:"require_tls"`
	// IncludeRequestAttemptCount: Envoy adds x-envoy-attempt-count upstream.
	IncludeRequestAttemptCount bool `json:"include_request_attempt_count"`
}

// SimResult is Istio's answer for one request.
type SimResult struct {
	ID          string `json:"id"`
	Gateway     string `json:"gateway"`
	Listener    string `json:"listener,omitempty"`
	FilterChain string `json:"filter_chain,omitempty"`
	RouteConfig string `json:"route_config,omitempty"`
	VirtualHost string `json:"virtual_host,omitempty"`
	// Route is the matched route, if any.
	Route *RouteResult `json:"route,omitempty"`
	// Error: why no route was reached (no listener, no virtual host, no route...).
	Error string `json:"error,omitempty"`
	// Unsupported: parts of the matched config the oracle's matcher does not
	// evaluate (the answer may then be wrong, and says so).
	Unsupported []string `json:"unsupported,omitempty"`
	// Authz: what the connection manager's RBAC filters decided (rbac.go); only when
	// the matched filter chain has one. A denied request is answered 403 before
	// routing: Route then says where it would have gone.
	Authz *AuthzResult `json:"authz,omitempty"`
}

// AuthzResult is the security filters' decision for one request (jwt_authn, then
// the RBAC filters).
type AuthzResult struct {
	// Filters: how many envoy.filters.http.rbac filters the connection manager has.
	Filters int `json:"filters"`
	// Denied: a filter answered itself: 403 (RBAC: access denied), or jwt_authn's 401
	// (403 for audiences).
	Denied bool `json:"denied"`
	// DeniedBy: "rbac" or "jwt" when Denied; Status: the answer's status then.
	DeniedBy string `json:"denied_by,omitempty"`
	Status   int    `json:"status,omitempty"`
	// Action: the action of the filter that decided: "DENY" (a policy matched: 403),
	// "ALLOW" (a policy matched: let through; none matched: 403); "" when no filter
	// refused and none admitted by a policy (only DENY filters, none matching).
	Action string `json:"action,omitempty"`
	// Policy: the Envoy policy that matched in the deciding filter
	// (`ns[NS]-policy[NAME]-rule[I]`); "" when an ALLOW filter matched none.
	Policy string `json:"policy,omitempty"`
	// Why: the filters' decisions in order, in words.
	Why string `json:"why"`
}

// RouteResult describes the matched Envoy route and where it sends the request.
type RouteResult struct {
	Name string `json:"name"`
	// Index of the route within its virtual host.
	Index int `json:"index"`
	// Config is the Istio object the route came from (route metadata).
	Config string `json:"config,omitempty"`
	Match  any    `json:"match"`
	// Action: "route", "redirect", "direct_response", "filter_action", or
	// "cors_preflight" (Envoy's CORS filter answers 200 before the router).
	Action        string        `json:"action"`
	PrefixRewrite *string       `json:"prefix_rewrite,omitempty"`
	RegexRewrite  *RegexRewrite `json:"regex_rewrite,omitempty"`
	RewrittenPath string        `json:"rewritten_path,omitempty"`
	HostRewrite   string        `json:"host_rewrite,omitempty"`
	Destinations  []Destination `json:"destinations,omitempty"`
	// ClusterNotFoundStatus: the status Envoy answers when the cluster the route picks
	// does not exist (a Destination with exists false): the route's
	// cluster_not_found_response_code (503 unless istiod set it; istiod sets 500 on
	// Gateway API routes, pilot/pkg/networking/core/route/route.go,
	// applyHTTPRouteDestination: UseGatewaySemantics).
	ClusterNotFoundStatus uint32          `json:"cluster_not_found_status,omitempty"`
	DirectResponse        *DirectResponse `json:"direct_response,omitempty"`
	Redirect              any             `json:"redirect,omitempty"`
	// Envoy is the whole route, in Envoy's JSON (header operations and the rest).
	Envoy any `json:"envoy"`
}

// RegexRewrite is Envoy's regex_rewrite.
type RegexRewrite struct {
	Pattern      string `json:"pattern"`
	Substitution string `json:"substitution"`
}

// DirectResponse is Envoy's direct_response.
type DirectResponse struct {
	Status uint32 `json:"status"`
	// Body: the inline string or bytes istiod set, if any.
	Body string `json:"body,omitempty"`
}

// Destination is one (weighted) cluster of the route.
type Destination struct {
	Cluster string `json:"cluster"`
	Weight  uint32 `json:"weight"`
	// Exists: istiod generated a cluster of that name for this proxy.
	Exists bool `json:"exists"`
	// TLS toward the endpoints: ISTIO_MUTUAL, AUTO (mTLS to endpoints labelled
	// tlsMode=istio, plaintext otherwise), SIMPLE, MUTUAL or DISABLE.
	TLS       string     `json:"tls,omitempty"`
	SNI       string     `json:"sni,omitempty"`
	Endpoints []Endpoint `json:"endpoints"`
}

// Endpoint is one endpoint of a cluster.
type Endpoint struct {
	Address string `json:"address"`
	Port    uint32 `json:"port"`
	// TLSMode is the endpoint's istio tlsMode metadata ("istio" or "disabled").
	TLSMode string `json:"tls_mode,omitempty"`
}

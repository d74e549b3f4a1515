package main

import (
	"fmt"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	meshconfig "istio.io/api/mesh/v1alpha1"

	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/simulation"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/wellknown"
)

// SidecarConfig is what istiod sends a workload pod's sidecar, as far as meshcheck
// compares it: each HttpConnectionManager of its inbound listener (pilot
// networking/core/listener_inbound.go: one filter chain per port and TLS mode, and the
// passthrough chains), in Envoy's JSON.
type SidecarConfig struct {
	Pod     string       `json:"pod"`
	Inbound []InboundHCM `json:"inbound"`
}

// InboundHCM is one HTTP filter chain of the sidecar's inbound listener.
type InboundHCM struct {
	// Chain is the filter chain's name (`0.0.0.0_8080`, `virtualInbound-catchall-http`).
	Chain string `json:"chain"`
	// Port is the chain's destination_port match (0: any).
	Port uint32 `json:"port"`
	// HCM is the connection manager's typed_config.
	HCM any `json:"hcm"`
}

// sidecarFor generates the config of workload pod `w` as a sidecar (model.SidecarProxy)
// and keeps the HTTP connection managers of its inbound listener.
// It also returns the proxy and its listeners (sidecarVerdict evaluates requests on
// them).
func sidecarFor(s *xds.FakeDiscoveryServer, w ProxyInput, version string, m *meshconfig.MeshConfig) (SidecarConfig, *generated, error) {
	p, err := setupProxy(s, model.SidecarProxy, w, version, m)
	if err != nil {
		return SidecarConfig{}, nil, err
	}
	g := &generated{proxy: p, listeners: s.Listeners(p)}
	out := SidecarConfig{Pod: w.Namespace + "/" + w.Name, Inbound: []InboundHCM{}}
	for _, l := range g.listeners {
		if l.Name != model.VirtualInboundListenerName {
			continue
		}
		for _, fc := range l.FilterChains {
			for _, f := range fc.Filters {
				if f.Name != wellknown.HTTPConnectionManager {
					continue
				}
				h := &hcm.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
					return out, nil, err
				}
				port := uint32(0)
				if fc.GetFilterChainMatch().GetDestinationPort() != nil {
					port = fc.GetFilterChainMatch().GetDestinationPort().GetValue()
				}
				out.Inbound = append(out.Inbound, InboundHCM{Chain: fc.Name, Port: port, HCM: toJSON(h)})
			}
		}
	}
	return out, g, nil
}

// sidecarVerdict: what the security filters of sidecar g decide for req, on the
// inbound filter chain Envoy picks for it (Istio's own simulation, CallModeInbound:
// iptables sends it to 15006; the chain by destination port and transport, mTLS or
// plaintext), evaluated as at a gateway (rbac.go evaluateAuthz, jwt.go) with the
// peer's certificate known.
func sidecarVerdict(g *generated, req SidecarRequest) SidecarVerdict {
	out := SidecarVerdict{ID: req.ID}
	if g == nil {
		out.Error = "istiod was not asked about pod " + req.Pod
		return out
	}
	fc, err := inboundChain(g, req)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.Chain = fc.GetName()
	r := Request{ID: req.ID, Port: req.Port, Method: req.Method, Scheme: "http", Host: req.Host,
		Path: req.Path, Headers: req.Headers, SourceAddress: req.SourceAddress,
		PeerPrincipal: req.PeerPrincipal, SNI: req.SNI}
	out.Authz, out.Unsupported = evaluateAuthz(g, fc, nil, nil, r)
	return out
}

// inboundChain: the filter chain of the sidecar's virtualInbound listener that takes
// req, or why none does.
func inboundChain(g *generated, req SidecarRequest) (*listener.FilterChain, error) {
	call := simulation.Call{
		Address:    g.proxy.IPAddresses[0],
		Port:       req.Port,
		Path:       req.Path,
		Protocol:   simulation.HTTP,
		HostHeader: req.Host,
		CallMode:   simulation.CallModeInbound,
	}
	if req.MTLS {
		call.TLS = simulation.MTLS
	}
	res, fc, err := runCapturingChain(&simulation.Simulation{Listeners: g.listeners}, call)
	if err != nil {
		return nil, err
	}
	if fc == nil {
		return nil, fmt.Errorf("no inbound filter chain takes the connection: %v", res.Error)
	}
	return fc, nil
}

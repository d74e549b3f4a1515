package main

import (
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	meshconfig "istio.io/api/mesh/v1alpha1"

	"istio.io/istio/pilot/pkg/model"
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
func sidecarFor(s *xds.FakeDiscoveryServer, w ProxyInput, version string, m *meshconfig.MeshConfig) (SidecarConfig, error) {
	p, err := setupProxy(s, model.SidecarProxy, w, version, m)
	if err != nil {
		return SidecarConfig{}, err
	}
	out := SidecarConfig{Pod: w.Namespace + "/" + w.Name, Inbound: []InboundHCM{}}
	for _, l := range s.Listeners(p) {
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
					return out, err
				}
				port := uint32(0)
				if fc.GetFilterChainMatch().GetDestinationPort() != nil {
					port = fc.GetFilterChainMatch().GetDestinationPort().GetValue()
				}
				out.Inbound = append(out.Inbound, InboundHCM{Chain: fc.Name, Port: port, HCM: toJSON(h)})
			}
		}
	}
	return out, nil
}

package main

import (
	"encoding/json"
	"fmt"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	meshconfig "istio.io/api/mesh/v1alpha1"

	"istio.io/istio/pilot/pkg/config/kube/crd"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/test/xds"
	istiocluster "istio.io/istio/pkg/cluster"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/constants"
	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/config/schema/collections"
	kubelib "istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/test"
)

// generated is one gateway pod's config, as protos (for the simulation) and JSON.
type generated struct {
	proxy     *model.Proxy
	listeners []*listener.Listener
	routes    []*route.RouteConfiguration
	clusters  []*cluster.Cluster
	endpoints []*endpoint.ClusterLoadAssignment
}

func run(in *Input, version string, noTelemetry bool) (*Output, error) {
	out := &Output{Istio: buildInfo(), Rejected: []Rejection{}, Warnings: []Rejection{},
		Gateways: []GatewayConfig{}, Simulations: []SimResult{}, Statuses: []ObjectStatus{},
		Sidecars: []SidecarConfig{}, SidecarVerdicts: []SidecarVerdict{}}
	configs := acceptedConfigs(in, out)
	gwapi := splitGatewayAPI(in, out)
	var runErr error
	err := test.Wrap(func(t test.Failer) {
		opts := xds.FakeOptions{Configs: configs, KubernetesObjectString: gwapi.rest,
			KubernetesObjects: gwapi.objects, KubeClientModifier: func(c kubelib.Client) { installGatewayAPICRDs(t, c) }}
		if noTelemetry || in.MeshConfig != "" {
			m, err := meshConfigOf(in.MeshConfig)
			if err != nil {
				runErr = err
				return
			}
			if noTelemetry {
				m.DefaultProviders = nil
			}
			opts.MeshConfig = m
		}
		s := xds.NewFakeDiscoveryServer(t, opts)
		if gwapi.userObjects > 0 {
			if err := waitGatewayAPI(s); err != nil {
				runErr = err
				return
			}
		}
		gens := map[string]*generated{}
		for _, gw := range in.Gateways {
			g, err := generateFor(s, gw, version, s.Env().Mesh())
			if err != nil {
				runErr = err
				return
			}
			key := gw.Namespace + "/" + gw.Name
			gens[key] = g
			out.Gateways = append(out.Gateways, dump(key, g))
		}
		sidecars := map[string]*generated{}
		for _, sc := range in.Sidecars {
			c, g, err := sidecarFor(s, sc, version, s.Env().Mesh())
			if err != nil {
				runErr = err
				return
			}
			sidecars[c.Pod] = g
			out.Sidecars = append(out.Sidecars, c)
		}
		for _, req := range in.SidecarRequests {
			out.SidecarVerdicts = append(out.SidecarVerdicts, sidecarVerdict(sidecars[req.Pod], req))
		}
		for _, req := range in.Requests {
			out.Simulations = append(out.Simulations, simulate(gens[req.Gateway], req))
		}
		if gwapi.userObjects > 0 {
			runErr = gatewayStatuses(t, s, gwapi, in, out)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("istiod config generation failed: %v", err)
	}
	return out, runErr
}

// acceptedConfigs parses the Istio documents as istiod's CRD conversion does and
// keeps those its validation accepts (the webhook would refuse the others).
func acceptedConfigs(in *Input, out *Output) []config.Config {
	// Applied together: one creation time, so istiod orders by name (as meshcheck does).
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var keep []config.Config
	for _, doc := range in.IstioDocs {
		reject := func(reason string) {
			out.Rejected = append(out.Rejected, Rejection{Object: doc.Key, Source: in.Sources[doc.Key], Reason: reason})
		}
		// One object at a time, so a refused object does not hide the others. Istio's
		// own CRD conversion, with its validation (what the webhook would refuse).
		parsed, unknown, err := crd.ParseInputs(doc.YAML)
		if err != nil {
			reject(err.Error())
			continue
		}
		if len(unknown) > 0 {
			reject("kind not known to this istiod")
			continue
		}
		for _, c := range parsed {
			schema, ok := collections.Pilot.FindByGroupVersionAliasesKind(c.GroupVersionKind)
			if !ok {
				reject("no schema in pilot")
				continue
			}
			warn, verr := schema.ValidateConfig(c)
			if warn != nil {
				out.Warnings = append(out.Warnings, Rejection{Object: doc.Key, Source: in.Sources[doc.Key], Reason: warn.Error()})
			}
			if verr != nil {
				reject("istiod's validation refuses it: " + verr.Error())
				continue
			}
			c.CreationTimestamp = created
			// As istiod's CRD client does (pilot/pkg/config/kube/crdclient/client.go,
			// TranslateObject): short host names resolve against this suffix.
			c.Domain = constants.DefaultClusterLocalDomain
			keep = append(keep, c)
		}
	}
	return keep
}

// meshConfigOf is Istio's default mesh config with the fixtures' `mesh` YAML over it
// (as istiod reads its ConfigMap: mesh.ApplyMeshConfigDefaults).
func meshConfigOf(yaml string) (*meshconfig.MeshConfig, error) {
	if yaml == "" {
		return mesh.DefaultMeshConfig(), nil
	}
	m, err := mesh.ApplyMeshConfigDefaults(yaml)
	if err != nil {
		return nil, fmt.Errorf("mesh config: %v", err)
	}
	return m, nil
}

// proxyConfigOf is the ProxyConfig pilot-agent sends for a pod annotated with
// proxy.istio.io/config `yaml`: the annotation merged over the mesh's defaultConfig
// (mesh.ApplyProxyConfig); nil without the annotation (istiod then uses the mesh's).
func proxyConfigOf(yaml string, m *meshconfig.MeshConfig) (*model.NodeMetaProxyConfig, error) {
	if yaml == "" {
		return nil, nil
	}
	mc, err := mesh.ApplyProxyConfig(yaml, m)
	if err != nil {
		return nil, fmt.Errorf("proxy.istio.io/config: %v", err)
	}
	return (*model.NodeMetaProxyConfig)(mc.DefaultConfig), nil
}

// setupProxy connects pod `in` to the fake istiod as a proxy of type `kind` (a gateway:
// model.Router; a workload's sidecar: model.SidecarProxy), as pilot-agent would.
func setupProxy(s *xds.FakeDiscoveryServer, kind model.NodeType, in ProxyInput, version string, m *meshconfig.MeshConfig) (*model.Proxy, error) {
	pc, err := proxyConfigOf(in.ProxyConfig, m)
	if err != nil {
		return nil, err
	}
	return s.SetupProxy(&model.Proxy{
		Type:            kind,
		ID:              in.Name + "." + in.Namespace,
		ConfigNamespace: in.Namespace,
		IPAddresses:     []string{in.IP},
		Labels:          in.Labels,
		Metadata: &model.NodeMetadata{
			Namespace:      in.Namespace,
			Labels:         in.Labels,
			IstioVersion:   version,
			ClusterID:      istiocluster.ID(constants.DefaultClusterName),
			ServiceAccount: in.ServiceAccount,
			ProxyConfig:    pc,
		},
	}), nil
}

func generateFor(s *xds.FakeDiscoveryServer, gw ProxyInput, version string, m *meshconfig.MeshConfig) (*generated, error) {
	p, err := setupProxy(s, model.Router, gw, version, m)
	if err != nil {
		return nil, err
	}
	g := &generated{proxy: p}
	g.listeners = s.Listeners(p)
	g.clusters = s.Clusters(p)
	g.routes = s.RoutesFromListeners(p, g.listeners)
	g.endpoints = s.Endpoints(p)
	return g, nil
}

func dump(pod string, g *generated) GatewayConfig {
	c := GatewayConfig{Pod: pod, Listeners: []any{}, Routes: []any{}, Clusters: []any{}, Endpoints: []any{},
		RouteTables: []RouteTable{}, ClusterSummary: []Destination{}}
	for _, rc := range g.routes {
		t := RouteTable{Name: rc.Name, VirtualHosts: []VirtualHost{}}
		for _, vh := range rc.VirtualHosts {
			v := VirtualHost{Name: vh.Name, Domains: vh.Domains, Routes: []RouteResult{}, RequireTLS: vh.RequireTls.String(), IncludeRequestAttemptCount: vh.IncludeRequestAttemptCount}
			for i, r := range vh.Routes {
				v.Routes = append(v.Routes, *describeRoute(g, r, i, nil))
			}
			t.VirtualHosts = append(t.VirtualHosts, v)
		}
		c.RouteTables = append(c.RouteTables, t)
	}
	for _, cl := range g.clusters {
		c.ClusterSummary = append(c.ClusterSummary, destination(g, cl.Name, 0))
	}
	for _, l := range g.listeners {
		c.Listeners = append(c.Listeners, toJSON(l))
	}
	for _, r := range g.routes {
		c.Routes = append(c.Routes, toJSON(r))
	}
	for _, cl := range g.clusters {
		c.Clusters = append(c.Clusters, toJSON(cl))
	}
	for _, e := range g.endpoints {
		c.Endpoints = append(c.Endpoints, toJSON(e))
	}
	return c
}

// toJSON renders a proto in Envoy's own JSON (proto field names, typed Any).
func toJSON(m proto.Message) any {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return map[string]string{"error": err.Error()}
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return map[string]string{"error": err.Error()}
	}
	return v
}

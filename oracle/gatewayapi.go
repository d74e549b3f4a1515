package main

// The Kubernetes Gateway API in the oracle. meshcheck writes Gateway API objects
// (gateway.networking.k8s.io) into kube_yaml as written; here they are taken out of
// it, brought to what the API server would store, and handed to the fake discovery
// server's kube client, where pilot's own gateway controller (pilot/pkg/config/kube/
// gateway, NewController; built by pilot/test/xds/fake.go) turns them into Istio
// Gateways and VirtualServices and computes their status.

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	k8sv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/consts"

	"istio.io/istio/pilot/pkg/config/kube/gatewaycommon"
	"istio.io/istio/pilot/pkg/features"
	"istio.io/istio/pkg/config/schema/gvr"
	kubelib "istio.io/istio/pkg/kube"
	"istio.io/istio/pkg/kube/kclient/clienttest"
	"istio.io/istio/pkg/test"
)

const gatewayAPIGroup = "gateway.networking.k8s.io"

// watchedGatewayAPI: the Gateway API kinds istiod's gateway controller reads, at the
// version it watches (pilot/pkg/config/kube/gateway/controller.go, NewController:
// buildClient per kind; TCPRoute only with PILOT_ENABLE_ALPHA_GATEWAY_API). Other
// kinds of the group are rejected: istiod would not read them.
func watchedGatewayAPI() map[string]schema.GroupVersionResource {
	m := map[string]schema.GroupVersionResource{
		"GatewayClass":     gvr.GatewayClass,
		"Gateway":          gvr.KubernetesGateway,
		"HTTPRoute":        gvr.HTTPRoute,
		"GRPCRoute":        gvr.GRPCRoute,
		"TLSRoute":         gvr.TLSRoute,
		"ReferenceGrant":   gvr.ReferenceGrant,
		"ListenerSet":      gvr.ListenerSet,
		"BackendTLSPolicy": gvr.BackendTLSPolicy,
	}
	if features.EnableAlphaGatewayAPI {
		m["TCPRoute"] = gvr.TCPRoute
	}
	return m
}

// gatewayAPIInput is the Gateway API part of the input, as the API server would hold it.
type gatewayAPIInput struct {
	// rest: kube_yaml without the Gateway API documents.
	rest string
	// objects: the Gateway API objects istiod reads, plus the GatewayClasses istiod
	// itself creates.
	objects []runtime.Object
	// keys: "Kind/namespace/name" of the objects, in input order (for statuses).
	keys []string
	// userObjects: how many of objects come from the input (the rest are istiod's
	// own GatewayClasses).
	userObjects int
	// generations: metadata.generation per key (the status writer checks it).
	generations map[string]int64
}

type docHead struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name       string `json:"name"`
		Namespace  string `json:"namespace"`
		Generation int64  `json:"generation"`
	} `json:"metadata"`
}

// splitGatewayAPI takes the Gateway API documents out of kube_yaml (documents are
// separated by "\n---\n", as pilot/test/xds/fake.go, kubernetesObjectsFromString,
// splits them) and decodes them with istiod's scheme (pkg/kube, IstioCodec).
func splitGatewayAPI(in *Input, out *Output) gatewayAPIInput {
	g := gatewayAPIInput{generations: map[string]int64{}}
	watched := watchedGatewayAPI()
	strict := serializer.NewCodecFactory(kubelib.IstioScheme, serializer.EnableStrict).UniversalDeserializer()
	lax := kubelib.IstioCodec.UniversalDeserializer()
	var rest []string
	classes := map[string]bool{}
	for _, doc := range strings.Split(in.KubeYAML, "\n---\n") {
		var head docHead
		if json.Unmarshal([]byte(doc), &head) != nil || !strings.HasPrefix(head.APIVersion, gatewayAPIGroup+"/") {
			rest = append(rest, doc)
			continue
		}
		key := head.Kind + "/" + head.Metadata.Namespace + "/" + head.Metadata.Name
		reject := func(reason string) {
			out.Rejected = append(out.Rejected, Rejection{Object: key, Source: in.Sources[key], Reason: reason})
		}
		res, ok := watched[head.Kind]
		if !ok {
			reject(fmt.Sprintf("istiod's gateway controller does not read %s (pilot/pkg/config/kube/gateway/controller.go, NewController; TCPRoute needs PILOT_ENABLE_ALPHA_GATEWAY_API)", head.APIVersion+" "+head.Kind))
			continue
		}
		if notEvaluated[head.Kind] {
			reject("the oracle cannot evaluate a " + head.Kind + " yet (pilot/test/xds/fake.go installs its CRD without the bundle-version annotation pkg/kube/kclient/crdwatcher.go, minimumVersionFilter, requires, so istiod's informer for it never starts)")
			continue
		}
		stored, err := asStored(doc, res)
		if err != nil {
			reject(err.Error())
			continue
		}
		obj, _, err := lax.Decode(stored, nil, nil)
		if err != nil {
			reject("does not decode with istiod's scheme: " + err.Error())
			continue
		}
		if _, _, serr := strict.Decode(stored, nil, nil); serr != nil {
			// The API server prunes fields its CRD schema does not know (with a warning).
			out.Warnings = append(out.Warnings, Rejection{Object: key, Source: in.Sources[key],
				Reason: "fields the Gateway API does not define are dropped: " + serr.Error()})
		}
		if head.Kind == "GatewayClass" {
			classes[head.Metadata.Name] = true
		}
		g.objects = append(g.objects, obj)
		g.keys = append(g.keys, key)
		g.generations[key] = head.Metadata.Generation
	}
	g.userObjects = len(g.objects)
	for _, gc := range builtinGatewayClasses(classes) {
		key := "GatewayClass//" + gc.Name
		g.objects = append(g.objects, gc)
		g.keys = append(g.keys, key)
		g.generations[key] = 0
	}
	g.rest = strings.Join(rest, "\n---\n")
	return g
}

// asStored is the document as the API server stores it: the Gateway API CRDs convert
// between versions with strategy None (only apiVersion changes), so a v1beta1 object
// is read at the version istiod watches; status is a subresource, dropped on create.
func asStored(doc string, res schema.GroupVersionResource) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		return nil, fmt.Errorf("not a JSON document: %v", err)
	}
	m["apiVersion"] = res.Group + "/" + res.Version
	delete(m, "status")
	return json.Marshal(m)
}

// builtinGatewayClasses: the GatewayClasses istiod's class controller creates when
// they do not exist (pilot/pkg/config/kube/gatewaycommon/gatewayclass.go,
// ClassController.reconcileClass over AllClasses and ClassInfos; run by
// gateway.Controller.Run with PILOT_ENABLE_GATEWAY_API_GATEWAYCLASS_CONTROLLER). Made
// here up front so the answer does not depend on when that controller gets to run.
func builtinGatewayClasses(defined map[string]bool) []*k8sv1.GatewayClass {
	if !features.EnableGatewayAPIGatewayClassController {
		return nil
	}
	var names []string
	for class := range gatewaycommon.AllClasses {
		names = append(names, string(class))
	}
	sort.Strings(names)
	var out []*k8sv1.GatewayClass
	for _, name := range names {
		if defined[name] {
			continue
		}
		info, ok := gatewaycommon.ClassInfos[gatewaycommon.AllClasses[k8sv1.ObjectName(name)]]
		if !ok {
			continue
		}
		desc := info.Description
		out = append(out, &k8sv1.GatewayClass{
			TypeMeta:   metav1.TypeMeta{APIVersion: gvr.GatewayClass.Group + "/" + gvr.GatewayClass.Version, Kind: "GatewayClass"},
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       k8sv1.GatewayClassSpec{ControllerName: k8sv1.GatewayController(info.Controller), Description: &desc},
		})
	}
	return out
}

// installGatewayAPICRDs installs the CRDs of the Gateway API kinds istiod reads that
// pilot/test/xds/fake.go does not install itself (its FakeControllerOptions.CRDs), so
// that, as in a cluster with the Gateway API's CRDs, istiod's delayed informers
// (pilot/pkg/config/kube/gateway/controller.go, buildClient) start for them. They
// carry the bundle-version annotation the Gateway API's CRDs have
// (pkg/kube/kclient/crdwatcher.go, minimumVersionFilter, ignores some CRDs without it).
func installGatewayAPICRDs(t test.Failer, c kubelib.Client) {
	for _, res := range []schema.GroupVersionResource{gvr.ListenerSet, gvr.BackendTLSPolicy} {
		clienttest.MakeCRDWithAnnotations(t, c, res, map[string]string{consts.BundleVersionAnnotation: consts.BundleVersion})
	}
}

// notEvaluated: kinds istiod reads that this oracle cannot yet show it: the fake
// server installs their CRDs itself without the bundle-version annotation, so
// pkg/kube/kclient/crdwatcher.go (minimumVersionFilter, gatewayapi.MinimumCRDVersions)
// never starts their informers and istiod would silently see none of them.
var notEvaluated = map[string]bool{"GRPCRoute": true, "TLSRoute": true}

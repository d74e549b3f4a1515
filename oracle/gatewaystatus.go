package main

// Gateway API status, as istiod's gateway controller writes it. The conditions are
// computed by pilot itself: the status collections of pilot/pkg/config/kube/gateway
// (controller.go, NewController: GatewayClassesCollection (gatewaycommon), the Gateway
// status of GatewayCollection joined with route attachments in
// FinalGatewayStatusCollection, and HTTPRouteCollection/GRPCRouteCollection/
// TLSRouteCollection/TCPRouteCollection in route_collections.go, with conditions.go:
// createRouteStatus, reportListenerCondition and friends). Istiod hands them to its
// status writer (Controller.SetStatusWrite -> pilot/pkg/status.Manager), which writes
// them through a config store; here that store keeps them instead of writing to the
// API server.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	k8sv1 "sigs.k8s.io/gateway-api/apis/v1"

	"istio.io/istio/pilot/pkg/config/kube/gateway"
	"istio.io/istio/pilot/pkg/config/kube/gatewaycommon"
	"istio.io/istio/pilot/pkg/model"
	"istio.io/istio/pilot/pkg/status"
	"istio.io/istio/pilot/test/xds"
	"istio.io/istio/pkg/config"
	"istio.io/istio/pkg/config/schema/collection"
	"istio.io/istio/pkg/test"
)

// ObjectStatus is the status istiod's controller writes on one Gateway API object.
type ObjectStatus struct {
	// Object: "Kind/namespace/name" ("GatewayClass//istio" for a class).
	Object     string      `json:"object"`
	Source     string      `json:"source,omitempty"`
	Conditions []Condition `json:"conditions"`
	// Listeners: a Gateway's (or ListenerSet's) listener statuses.
	Listeners []ListenerStatus `json:"listeners,omitempty"`
	// Parents: a route's status per parent reference (a policy's per ancestor).
	Parents []ParentStatus `json:"parents,omitempty"`
}

// Condition is one status condition (metav1.Condition without times and generations).
type Condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// ListenerStatus is one listener's status.
type ListenerStatus struct {
	Name           string      `json:"name"`
	AttachedRoutes int32       `json:"attached_routes"`
	Conditions     []Condition `json:"conditions"`
}

// ParentStatus is a route's status for one parent reference.
type ParentStatus struct {
	// Parent: "Kind/namespace/name" of the parent (Kind defaults to Gateway, namespace
	// to the route's).
	Parent         string      `json:"parent"`
	SectionName    string      `json:"section_name,omitempty"`
	Port           int32       `json:"port,omitempty"`
	ControllerName string      `json:"controller_name"`
	Conditions     []Condition `json:"conditions"`
}

// statusCapture is the config store istiod's status writer writes through
// (pilot/pkg/status/manager.go, NewManager: Get, then UpdateStatus); it keeps what is
// written.
type statusCapture struct {
	mu          sync.Mutex
	generations map[string]int64
	written     map[string][]byte
	lastWrite   time.Time
}

var _ model.ConfigStore = &statusCapture{}

func (s *statusCapture) Schemas() collection.Schemas { return collection.SchemasFor() }

// Get: the object as the API server holds it; the writer only compares its generation.
func (s *statusCapture) Get(typ config.GroupVersionKind, name, namespace string) *config.Config {
	gen, ok := s.generations[typ.Kind+"/"+namespace+"/"+name]
	if !ok {
		return nil
	}
	return &config.Config{Meta: config.Meta{GroupVersionKind: typ, Name: name, Namespace: namespace, Generation: gen}}
}

func (s *statusCapture) List(config.GroupVersionKind, string) []config.Config { return nil }

func (s *statusCapture) Create(config.Config) (string, error) {
	return "", errors.New("the oracle's status store only takes status")
}

func (s *statusCapture) Update(config.Config) (string, error) {
	return "", errors.New("the oracle's status store only takes status")
}

func (s *statusCapture) UpdateStatus(c config.Config) (string, error) {
	b, err := json.Marshal(c.Status)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.written[c.GroupVersionKind.Kind+"/"+c.Namespace+"/"+c.Name] = b
	s.lastWrite = time.Now()
	return "", nil
}

func (s *statusCapture) Delete(config.GroupVersionKind, string, string, *string) error { return nil }

// waitGatewayAPI waits until pilot's gateway controller has synced and the pushes
// its outputs cause are in the push context (the fake server waits for its first
// push only; the controller's outputs are recomputed after each push context's
// Controller.Reconcile, pilot/pkg/model/push_context.go, initPushContext).
func waitGatewayAPI(s *xds.FakeDiscoveryServer) error {
	gwc, ok := s.Env().GatewayAPIController.(*gateway.Controller)
	if !ok {
		return errors.New("the fake discovery server has no Gateway API controller")
	}
	deadline := time.Now().Add(30 * time.Second)
	for !gwc.HasSynced() {
		if time.Now().After(deadline) {
			return errors.New("pilot's gateway controller did not sync in 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for quiet := 0; quiet < 10; {
		if time.Now().After(deadline) {
			return errors.New("pilot's pushes did not settle in 30 s")
		}
		in := s.Discovery.InboundUpdates.Load()
		time.Sleep(10 * time.Millisecond)
		if s.Discovery.CommittedUpdates.Load() >= in && s.Discovery.InboundUpdates.Load() == in {
			quiet++
		} else {
			quiet = 0
		}
	}
	return nil
}

// gatewayStatuses turns istiod's status writer on (as the leader's istiod does) and
// collects what it writes.
func gatewayStatuses(t test.Failer, s *xds.FakeDiscoveryServer, g gatewayAPIInput, in *Input, out *Output) error {
	gwc, ok := s.Env().GatewayAPIController.(*gateway.Controller)
	if !ok {
		return errors.New("the fake discovery server has no Gateway API controller")
	}
	capture := &statusCapture{generations: g.generations, written: map[string][]byte{}}
	mgr := status.NewManager(capture)
	mgr.Start(test.NewStop(t))
	started := time.Now()
	gwc.SetStatusWrite(true, mgr)
	// Every class of Istio's and every Gateway of such a class gets a status; routes
	// are written alongside. Then nothing more for a while: done.
	expected := expectedStatuses(g)
	deadline := started.Add(30 * time.Second)
	for {
		time.Sleep(20 * time.Millisecond)
		capture.mu.Lock()
		missing := 0
		for _, k := range expected {
			if capture.written[k] == nil {
				missing++
			}
		}
		quiet := time.Since(capture.lastWrite) > 300*time.Millisecond && time.Since(started) > 300*time.Millisecond
		capture.mu.Unlock()
		if missing == 0 && quiet {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("istiod's gateway controller wrote no status for %d Gateway API object(s) in 30 s", missing)
		}
	}
	gwc.SetStatusWrite(false, nil)
	capture.mu.Lock()
	defer capture.mu.Unlock()
	for i, key := range g.keys {
		raw := capture.written[key]
		user := i < g.userObjects
		if raw == nil {
			if user && !hasNoStatus(key) {
				out.Warnings = append(out.Warnings, Rejection{Object: key, Source: in.Sources[key],
					Reason: "istiod's gateway controller writes no status on it: neither its class nor any of its parents is Istio's, so istiod does not act on it"})
			}
			continue
		}
		st, err := readStatus(key, raw)
		if err != nil {
			return err
		}
		st.Source = in.Sources[key]
		out.Statuses = append(out.Statuses, st)
	}
	return nil
}

func hasNoStatus(key string) bool {
	kind, _, _ := splitKey(key)
	return kind == "ReferenceGrant"
}

// expectedStatuses: classes whose controller is Istio's (gatewaycommon.ClassInfos)
// and the Gateways of those classes.
func expectedStatuses(g gatewayAPIInput) []string {
	ours := map[string]bool{}
	var keys []string
	for i, o := range g.objects {
		if gc, ok := o.(*k8sv1.GatewayClass); ok {
			if _, f := gatewaycommon.ClassInfos[gc.Spec.ControllerName]; f {
				ours[gc.Name] = true
				keys = append(keys, g.keys[i])
			}
		}
	}
	for i, o := range g.objects {
		if gw, ok := o.(*k8sv1.Gateway); ok && ours[string(gw.Spec.GatewayClassName)] {
			keys = append(keys, g.keys[i])
		}
	}
	return keys
}

// rawStatus covers the status shapes of the Gateway API kinds istiod writes.
type rawStatus struct {
	Conditions []Condition `json:"conditions"`
	Listeners  []struct {
		Name           string      `json:"name"`
		AttachedRoutes int32       `json:"attachedRoutes"`
		Conditions     []Condition `json:"conditions"`
	} `json:"listeners"`
	Parents   []rawParent `json:"parents"`
	Ancestors []rawParent `json:"ancestors"`
}

type rawParent struct {
	ParentRef      rawRef      `json:"parentRef"`
	AncestorRef    rawRef      `json:"ancestorRef"`
	ControllerName string      `json:"controllerName"`
	Conditions     []Condition `json:"conditions"`
}

type rawRef struct {
	Kind        string `json:"kind"`
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	SectionName string `json:"sectionName"`
	Port        int32  `json:"port"`
}

func readStatus(key string, raw []byte) (ObjectStatus, error) {
	var r rawStatus
	if err := json.Unmarshal(raw, &r); err != nil {
		return ObjectStatus{}, fmt.Errorf("status of %s: %v", key, err)
	}
	_, ns, _ := splitKey(key)
	st := ObjectStatus{Object: key, Conditions: nonNil(r.Conditions)}
	for _, l := range r.Listeners {
		st.Listeners = append(st.Listeners, ListenerStatus{Name: l.Name, AttachedRoutes: l.AttachedRoutes, Conditions: nonNil(l.Conditions)})
	}
	for _, p := range append(r.Parents, r.Ancestors...) {
		ref := p.ParentRef
		if ref.Name == "" {
			ref = p.AncestorRef
		}
		kind, pns := ref.Kind, ref.Namespace
		if kind == "" {
			kind = "Gateway"
		}
		if pns == "" {
			pns = ns
		}
		st.Parents = append(st.Parents, ParentStatus{Parent: kind + "/" + pns + "/" + ref.Name,
			SectionName: ref.SectionName, Port: ref.Port, ControllerName: p.ControllerName, Conditions: nonNil(p.Conditions)})
	}
	return st, nil
}

func nonNil(c []Condition) []Condition {
	if c == nil {
		return []Condition{}
	}
	return c
}

func splitKey(key string) (string, string, string) {
	p := strings.SplitN(key, "/", 3)
	for len(p) < 3 {
		p = append(p, "")
	}
	return p[0], p[1], p[2]
}

package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"
)

// Margins the shutdown checks demand (see the timeline in gateway.yaml).
const (
	// graceMargin: terminationGracePeriodSeconds must exceed preStop plus
	// the process's own hard deadline (--shutdown-timeout) by this much.
	graceMargin = 5 * time.Second
	// drainTail: after --drain-window the gateway still stops its HTTP
	// listener (up to 2 s) and closes what is left; the window must end
	// this long before --shutdown-timeout.
	drainTail = 2 * time.Second
)

// k8sObject is one YAML document of deploy/k8s, decoded into its API type.
type k8sObject struct {
	where string // file#index kind/name, for messages
	kind  string
	obj   any // *appsv1.Deployment, *corev1.Service, ...
}

// newTyped returns the API type for apiVersion/kind; deploy files may use
// no other kinds.
func newTyped(apiVersion, kind string) (any, error) {
	switch apiVersion + " " + kind {
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, nil
	case "networking.k8s.io/v1 NetworkPolicy":
		return &networkingv1.NetworkPolicy{}, nil
	case "monitoring.coreos.com/v1 ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}, nil
	}
	return nil, fmt.Errorf("apiVersion %q kind %q: not a kind these tests know; add its type to newTyped", apiVersion, kind)
}

// decodeStrict turns one YAML document into its typed object: duplicate
// keys and fields the type does not have are errors (kubectl would drop
// an unknown field silently, or reject it server-side). It returns nil for
// an empty (comment-only) document.
func decodeStrict(doc []byte) (any, error) {
	j, err := sigsyaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	if t := bytes.TrimSpace(j); len(t) == 0 || string(t) == "null" {
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return nil, err
	}
	obj, err := newTyped(tm.APIVersion, tm.Kind)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: trailing data", tm.Kind)
	}
	return obj, nil
}

func loadManifests(t *testing.T) []k8sObject {
	t.Helper()
	var files []string
	for _, pat := range []string{"k8s/*.yaml", "k8s/*/*.yaml", "k8s/*.yml", "k8s/*/*.yml"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) == 0 {
		t.Fatal("no deploy/k8s/*.yaml files")
	}
	var objs []k8sObject
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, decodeDocs(t, f, data)...)
	}
	if t.Failed() {
		t.FailNow()
	}
	return objs
}

// decodeDocs strictly decodes every document of one multi-document YAML
// file (a manifest file, or a chart template rendered by helm).
func decodeDocs(t *testing.T, name string, data []byte) []k8sObject {
	t.Helper()
	var objs []k8sObject
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", name, i, err)
		}
		obj, err := decodeStrict(doc)
		if err != nil {
			t.Errorf("%s: document %d: %v", name, i, err)
			continue
		}
		if obj == nil {
			continue
		}
		mo := obj.(metav1.ObjectMetaAccessor).GetObjectMeta()
		kind := strings.TrimPrefix(fmt.Sprintf("%T", obj), "*")
		kind = kind[strings.LastIndex(kind, ".")+1:]
		objs = append(objs, k8sObject{where: fmt.Sprintf("%s#%d %s/%s", name, i, kind, mo.GetName()), kind: kind, obj: obj})
	}
	return objs
}

func TestStrictDecodeRejectsMistakes(t *testing.T) {
	good := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 2\n"
	if obj, err := decodeStrict([]byte(good)); err != nil || obj.(*appsv1.Deployment).Spec.Replicas == nil {
		t.Fatalf("a valid Deployment: %v", err)
	}
	for name, doc := range map[string]string{
		"misspelt field":               strings.Replace(good, "replicas", "replicaz", 1),
		"field at the wrong level":     good + "  terminationGracePeriodSeconds: 5\n",
		"duplicate key":                good + "  replicas: 3\n",
		"wrong type":                   strings.Replace(good, "replicas: 2", "replicas: two", 1),
		"unknown kind":                 strings.Replace(good, "kind: Deployment", "kind: Deploymnet", 1),
		"unknown ServiceMonitor field": "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  selector: {}\n  endpoints: [{port: ops, pathh: /metrics}]\n",
	} {
		if _, err := decodeStrict([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestManifestsDecodeStrictly decodes every document and checks names,
// labels and port names the way the API server would.
func TestManifestsDecodeStrictly(t *testing.T) { checkDecoded(t, indexManifests(t)) }

func checkDecoded(t *testing.T, m *manifests) {
	kinds := map[string]int{}
	objs := m.objs
	for _, o := range objs {
		kinds[o.kind]++
		mo := o.obj.(metav1.ObjectMetaAccessor).GetObjectMeta()
		for _, msg := range validation.IsDNS1123Subdomain(mo.GetName()) {
			t.Errorf("%s: name: %s", o.where, msg)
		}
		checkLabels(t, o.where, mo.GetLabels())
		if pt := podTemplateOf(o.obj); pt != nil {
			checkLabels(t, o.where+" template", pt.Labels)
			for _, c := range pt.Spec.Containers {
				for _, p := range c.Ports {
					if p.Name != "" {
						for _, msg := range validation.IsValidPortName(p.Name) {
							t.Errorf("%s: container %s port %q: %s", o.where, c.Name, p.Name, msg)
						}
					}
				}
			}
		}
	}
	for _, k := range []string{"Deployment", "StatefulSet", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor", "ConfigMap", "NetworkPolicy"} {
		if (k == "HorizontalPodAutoscaler" && !m.top.hpa) || (k == "StatefulSet" && m.top.natsMode == "external") ||
			(k == "Deployment" && m.top.natsMode == "embedded") {
			continue
		}
		if kinds[k] == 0 {
			t.Errorf("no %s", k)
		}
	}
}

func checkLabels(t *testing.T, where string, l map[string]string) {
	t.Helper()
	for k, v := range l {
		for _, msg := range validation.IsQualifiedName(k) {
			t.Errorf("%s: label key %q: %s", where, k, msg)
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			t.Errorf("%s: label %s=%q: %s", where, k, v, msg)
		}
	}
}

func podTemplateOf(obj any) *corev1.PodTemplateSpec {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template
	case *appsv1.StatefulSet:
		return &o.Spec.Template
	}
	return nil
}

// workload is a Deployment or StatefulSet with what the checks need.
type workload struct {
	where    string
	kind     string
	name     string
	replicas *int32
	template *corev1.PodTemplateSpec
	selector *metav1.LabelSelector
	sts      *appsv1.StatefulSet
}

type manifests struct {
	top         topology
	objs        []k8sObject
	workloads   []workload
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	monitors    []*monitoringv1.ServiceMonitor
	deployments map[string]*appsv1.Deployment
}

// topology is what a set of manifests is meant to deploy, so the checks
// know which objects must (not) be there.
type topology struct {
	natsMode string // statefulset (fabric nats pods), external, embedded (gateways are the cluster)
	hpa      bool   // an HPA owns the gateway count
	optIn    bool   // the values opt into anonymous joins or profiles on purpose
}

// indexManifests: deploy/k8s, the chart rendered with the default values
// and a JWT key (task k8s).
func indexManifests(t *testing.T) *manifests {
	t.Helper()
	return indexObjects(t, loadManifests(t), topology{natsMode: "statefulset", hpa: true})
}

func indexObjects(t *testing.T, objs []k8sObject, top topology) *manifests {
	t.Helper()
	m := &manifests{top: top, objs: objs, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, deployments: map[string]*appsv1.Deployment{}}
	for _, o := range m.objs {
		switch x := o.obj.(type) {
		case *appsv1.Deployment:
			m.deployments[x.Name] = x
			m.workloads = append(m.workloads, workload{o.where, "Deployment", x.Name, x.Spec.Replicas, &x.Spec.Template, x.Spec.Selector, nil})
		case *appsv1.StatefulSet:
			m.workloads = append(m.workloads, workload{o.where, "StatefulSet", x.Name, x.Spec.Replicas, &x.Spec.Template, x.Spec.Selector, x})
		case *corev1.Service:
			m.services[x.Name] = x
		case *corev1.ConfigMap:
			m.configMaps[x.Name] = x
		case *policyv1.PodDisruptionBudget:
			m.pdbs = append(m.pdbs, x)
		case *autoscalingv2.HorizontalPodAutoscaler:
			m.hpas = append(m.hpas, x)
		case *monitoringv1.ServiceMonitor:
			m.monitors = append(m.monitors, x)
		}
	}
	return m
}

// selected returns the workloads whose pods sel matches.
func (m *manifests) selected(sel labels.Selector) []workload {
	var out []workload
	for _, w := range m.workloads {
		if sel.Matches(labels.Set(w.template.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func mustSelector(t *testing.T, where string, ls *metav1.LabelSelector) labels.Selector {
	t.Helper()
	if ls == nil || (len(ls.MatchLabels) == 0 && len(ls.MatchExpressions) == 0) {
		t.Fatalf("%s: empty selector (it would select every pod)", where)
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		t.Fatalf("%s: selector: %v", where, err)
	}
	return sel
}

// containerPort resolves a probe's or Service's target port (a name or a
// number) against a pod's containers.
func containerPort(spec *corev1.PodSpec, p intstr.IntOrString) (corev1.ContainerPort, string, bool) {
	for _, c := range spec.Containers {
		for _, cp := range c.Ports {
			if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
				return cp, c.Name, true
			}
		}
	}
	return corev1.ContainerPort{}, "", false
}

// TestWorkloadSelectors: each workload's selector matches its own pods and
// no other workload's, and every Service selects exactly one workload with
// target ports its containers have.
func TestWorkloadSelectors(t *testing.T) { checkWorkloadSelectors(t, indexManifests(t)) }

func checkWorkloadSelectors(t *testing.T, m *manifests) {
	for _, w := range m.workloads {
		sel := mustSelector(t, w.where, w.selector)
		if !sel.Matches(labels.Set(w.template.Labels)) {
			t.Errorf("%s: selector %s does not match its pod labels %v", w.where, sel, w.template.Labels)
		}
		if got := m.selected(sel); len(got) != 1 {
			t.Errorf("%s: selector %s matches %d workloads' pods", w.where, sel, len(got))
		}
	}
	for name, svc := range m.services {
		where := "Service/" + name
		if len(svc.Spec.Selector) == 0 {
			t.Errorf("%s: no selector", where)
			continue
		}
		ws := m.selected(labels.SelectorFromSet(svc.Spec.Selector))
		if len(ws) != 1 {
			t.Errorf("%s: selector %v matches %d workloads, want 1", where, svc.Spec.Selector, len(ws))
			continue
		}
		for _, sp := range svc.Spec.Ports {
			tp := sp.TargetPort
			if tp.Type == intstr.Int && tp.IntVal == 0 {
				tp = intstr.FromInt32(sp.Port)
			}
			if _, _, ok := containerPort(&ws[0].template.Spec, tp); !ok {
				t.Errorf("%s: port %s targets %s, which %s has no container port for", where, sp.Name, tp.String(), ws[0].where)
			}
		}
	}
}

// fabricProcess is one container running `fabric serve` or `fabric nats`.
type fabricProcess struct {
	where string
	w     workload
	c     *corev1.Container
	sub   string
	s     settings
}

func (m *manifests) fabricProcesses(t *testing.T) []fabricProcess {
	t.Helper()
	var out []fabricProcess
	for _, w := range m.workloads {
		for i := range w.template.Spec.Containers {
			c := &w.template.Spec.Containers[i]
			where := fmt.Sprintf("%s container %s", w.where, c.Name)
			argv := append(slices.Clone(c.Command), c.Args...)
			if len(c.Command) > 0 {
				// An explicit command must still be the image's binary.
				if argv[0] != "/usr/local/bin/fabric" {
					t.Errorf("%s: command %q is not /usr/local/bin/fabric", where, argv[0])
					continue
				}
				argv = argv[1:]
			}
			if len(argv) == 0 {
				t.Errorf("%s: no subcommand: the image's default is a single-node demo", where)
				continue
			}
			sub := argv[0]
			if sub != "serve" && sub != "nats" {
				t.Errorf("%s: subcommand %q, want serve or nats", where, sub)
				continue
			}
			fl := commandFlags(t, sub)
			args, errs := parseArgs(fl, argv[1:])
			for _, err := range errs {
				t.Errorf("%s: fabric %s: %v", where, sub, err)
			}
			s := settings{flags: fl, args: args, env: map[string]string{}}
			if sub == "serve" {
				env := map[string]string{}
				for _, e := range c.Env {
					if e.ValueFrom != nil && strings.HasPrefix(e.Name, "FABRIC_") {
						env[e.Name] = "$(from " + e.Name + ")"
						continue
					}
					env[e.Name] = e.Value
				}
				var errs []error
				s.env, errs = checkServeEnv(fl, env)
				for _, err := range errs {
					t.Errorf("%s: %v", where, err)
				}
				if len(c.EnvFrom) > 0 {
					t.Errorf("%s: envFrom: variables unknown to this test could name no flag; list them under env", where)
				}
				if cfg := s.get("config"); cfg != "" {
					s.file = m.configFile(t, where, w.template, c, cfg, fl)
				}
				errs = serveExposure(s)
				if !m.top.optIn {
					errs = append(errs, secureDefaults(s)...)
				}
				for _, err := range errs {
					t.Errorf("%s: %v", where, err)
				}
			}
			if sub == "nats" {
				for _, err := range natsExposure(s) {
					t.Errorf("%s: %v", where, err)
				}
			}
			out = append(out, fabricProcess{where: where, w: w, c: c, sub: sub, s: s})
		}
	}
	return out
}

// configFile finds the --config file in a ConfigMap volume and checks its keys.
func (m *manifests) configFile(t *testing.T, where string, pt *corev1.PodTemplateSpec, c *corev1.Container, path string, fl map[string]flagInfo) map[string]string {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		rel, err := filepath.Rel(vm.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, v := range pt.Spec.Volumes {
			if v.Name != vm.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := m.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Errorf("%s: volume %s: no ConfigMap %s in deploy/k8s", where, v.Name, v.ConfigMap.Name)
				return nil
			}
			data, ok := cm.Data[rel]
			if !ok {
				t.Errorf("%s: --config=%s: ConfigMap %s has no key %q", where, path, cm.Name, rel)
				return nil
			}
			file, errs := checkConfigFile(fl, []byte(data))
			for _, err := range errs {
				t.Errorf("%s: ConfigMap %s %s: %v", where, cm.Name, rel, err)
			}
			return file
		}
	}
	t.Errorf("%s: --config=%s is on no ConfigMap volume", where, path)
	return nil
}

// TestFabricCommandLines: every flag and FABRIC_* variable the manifests
// give `fabric serve` / `fabric nats` exists (checked against the built
// binary's -h) and has a value of the flag's type.
func TestFabricCommandLines(t *testing.T) { checkFabricCommandLines(t, indexManifests(t)) }

func checkFabricCommandLines(t *testing.T, m *manifests) {
	subs := map[string]int{}
	for _, p := range m.fabricProcesses(t) {
		subs[p.sub]++
	}
	if subs["serve"] == 0 {
		t.Errorf("no gateway (fabric serve): %v", subs)
	}
	if wantNATS := m.top.natsMode == "statefulset"; wantNATS != (subs["nats"] > 0) {
		t.Errorf("NATS mode %s: fabric nats containers %d", m.top.natsMode, subs["nats"])
	}
}

// listenPort returns the port of a listen setting that must be reachable
// from other pods (probes, Services): on all interfaces, a fixed port.
func listenPort(t *testing.T, where, flag, v string) int32 {
	t.Helper()
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		t.Errorf("%s: --%s=%q: %v", where, flag, v, err)
		return 0
	}
	if host != "" && host != "0.0.0.0" && host != "::" {
		t.Errorf("%s: --%s=%q listens on %s only: probes and Services cannot reach it", where, flag, v, host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n <= 0 || n > 65535 {
		t.Errorf("%s: --%s=%q: want a fixed port", where, flag, v)
	}
	return int32(n)
}

func namedPort(t *testing.T, where string, c *corev1.Container, name string) int32 {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Errorf("%s: no container port named %q", where, name)
	return -1
}

func checkProbe(t *testing.T, where, what string, pr *corev1.Probe, spec *corev1.PodSpec, path string, port int32) {
	t.Helper()
	if pr == nil {
		t.Errorf("%s: no %s", where, what)
		return
	}
	var target intstr.IntOrString
	switch {
	case path != "" && pr.HTTPGet != nil:
		if pr.HTTPGet.Path != path {
			t.Errorf("%s: %s GET %s, want %s", where, what, pr.HTTPGet.Path, path)
		}
		target = pr.HTTPGet.Port
	case path == "" && pr.TCPSocket != nil:
		target = pr.TCPSocket.Port
	default:
		t.Errorf("%s: %s: want an HTTP GET %q / TCP check", where, what, path)
		return
	}
	cp, _, ok := containerPort(spec, target)
	if !ok {
		t.Errorf("%s: %s port %s is no container port", where, what, target.String())
	} else if cp.ContainerPort != port {
		t.Errorf("%s: %s probes port %d, the process listens on %d", where, what, cp.ContainerPort, port)
	}
}

// preStopSeconds: how long the preStop hook delays SIGTERM.
func preStopSeconds(t *testing.T, where string, c *corev1.Container) time.Duration {
	t.Helper()
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		return 0
	}
	ps := c.Lifecycle.PreStop
	switch {
	case ps.Sleep != nil:
		return time.Duration(ps.Sleep.Seconds) * time.Second
	case ps.Exec != nil:
		// The image is distroless: no shell, no sleep binary.
		t.Errorf("%s: preStop exec %q: the distroless image has no shell or sleep; use lifecycle.preStop.sleep", where, ps.Exec.Command)
	default:
		t.Errorf("%s: preStop: only a sleep action is understood here", where)
	}
	return 0
}

func gracePeriod(t *testing.T, where string, spec *corev1.PodSpec) time.Duration {
	t.Helper()
	if spec.TerminationGracePeriodSeconds == nil {
		t.Errorf("%s: terminationGracePeriodSeconds unset (30 s default); set it from the drain timeline", where)
		return 30 * time.Second
	}
	return time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
}

// TestGatewayPods: probes on the ops listener, a preStop and grace period
// that cover the drain, no Service-link variables, ports matching the
// listeners.
func TestGatewayPods(t *testing.T) { checkGatewayPods(t, indexManifests(t)) }

func checkGatewayPods(t *testing.T, m *manifests) {
	n := 0
	for _, p := range m.fabricProcesses(t) {
		if p.sub != "serve" {
			continue
		}
		n++
		spec := &p.w.template.Spec
		ops := listenPort(t, p.where, "ops-listen", p.s.get("ops-listen"))
		client := listenPort(t, p.where, "listen", p.s.get("listen"))
		if got := namedPort(t, p.where, p.c, "ops"); got != ops {
			t.Errorf("%s: container port ops is %d, --ops-listen port is %d", p.where, got, ops)
		}
		if got := namedPort(t, p.where, p.c, "http"); got != client {
			t.Errorf("%s: container port http is %d, --listen port is %d", p.where, got, client)
		}
		checkProbe(t, p.where, "readinessProbe", p.c.ReadinessProbe, spec, "/readyz", ops)
		checkProbe(t, p.where, "livenessProbe", p.c.LivenessProbe, spec, "/healthz", ops)
		if m.top.natsMode == "embedded" {
			// The gateways are the NATS cluster: a StatefulSet whose
			// embedded servers route to every replica.
			if p.s.get("nats-url") != "" {
				t.Errorf("%s: embedded mode with --nats-url (the cluster flags do nothing then)", p.where)
			}
			if p.w.sts == nil {
				t.Errorf("%s: embedded cluster members must be a StatefulSet (stable --nats-name and store)", p.where)
			} else {
				m.checkCluster(t, p, "nats-name", listenPort(t, p.where, "cluster-listen", p.s.get("cluster-listen")))
				m.checkOnClaim(t, p, p.s.get("data-dir"))
			}
		} else if p.s.get("nats-url") == "" {
			t.Errorf("%s: no --nats-url: each gateway would run its own embedded NATS node", p.where)
		}
		if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
			t.Errorf("%s: enableServiceLinks must be false: a Service named fabric-* injects FABRIC_*_PORT variables, which serve rejects", p.where)
		}

		// The drain timeline.
		preStop := preStopSeconds(t, p.where, p.c)
		if preStop < 5*time.Second {
			t.Errorf("%s: preStop sleeps %s; want ≥ 5 s so endpoints drop the pod before SIGTERM", p.where, preStop)
		}
		drain := p.s.duration(t, p.where, "drain-window")
		deadline := p.s.duration(t, p.where, "shutdown-timeout")
		grace := gracePeriod(t, p.where, spec)
		if drain <= 0 {
			t.Errorf("%s: --drain-window=%s: clients would all reconnect at once", p.where, drain)
		}
		if drain+drainTail > deadline {
			t.Errorf("%s: --drain-window %s + %s must fit in --shutdown-timeout %s", p.where, drain, drainTail, deadline)
		}
		if need := preStop + max(drain, deadline) + graceMargin; grace < need {
			t.Errorf("%s: terminationGracePeriodSeconds %s < preStop %s + shutdown %s + margin %s: the kubelet would SIGKILL mid-drain",
				p.where, grace, preStop, max(drain, deadline), graceMargin)
		}
		checkGoMemLimit(t, p.where, p.c)
	}
	if n == 0 {
		t.Fatal("no fabric serve container in deploy/k8s")
	}
}

// checkGoMemLimit: a GOMEMLIMIT at or over the memory limit is useless.
func checkGoMemLimit(t *testing.T, where string, c *corev1.Container) {
	t.Helper()
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		re := regexp.MustCompile(`^(\d+)(B|KiB|MiB|GiB)?$`)
		mm := re.FindStringSubmatch(e.Value)
		if mm == nil {
			t.Errorf("%s: GOMEMLIMIT=%q: not a Go memory limit", where, e.Value)
			return
		}
		v, _ := strconv.ParseInt(mm[1], 10, 64)
		v <<= map[string]int{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30}[mm[2]]
		lim, ok := c.Resources.Limits[corev1.ResourceMemory]
		if ok && v >= lim.Value() {
			t.Errorf("%s: GOMEMLIMIT %s is not under the memory limit %s", where, e.Value, lim.String())
		}
	}
}

// TestNATSPods: stable names, routes that name every replica at the route
// port, storage on the volume, a grace period over the shutdown timeout
// and anti-affinity.
func TestNATSPods(t *testing.T) { checkNATSPods(t, indexManifests(t)) }

func checkNATSPods(t *testing.T, m *manifests) {
	n := 0
	for _, p := range m.fabricProcesses(t) {
		if p.sub != "nats" {
			continue
		}
		n++
		sts := p.w.sts
		if sts == nil {
			t.Errorf("%s: fabric nats must run in a StatefulSet (stable name and volume)", p.where)
			continue
		}
		spec := &p.w.template.Spec
		client := listenPort(t, p.where, "listen", p.s.get("listen"))
		route := listenPort(t, p.where, "cluster-listen", p.s.get("cluster-listen"))
		if got := namedPort(t, p.where, p.c, "client"); got != client {
			t.Errorf("%s: container port client is %d, --listen port is %d", p.where, got, client)
		}
		if got := namedPort(t, p.where, p.c, "cluster"); got != route {
			t.Errorf("%s: container port cluster is %d, --cluster-listen port is %d", p.where, got, route)
		}
		checkProbe(t, p.where, "readinessProbe", p.c.ReadinessProbe, spec, "", client)
		checkProbe(t, p.where, "livenessProbe", p.c.LivenessProbe, spec, "", client)

		m.checkCluster(t, p, "name", route)
		m.checkOnClaim(t, p, p.s.get("store-dir"))

		grace := gracePeriod(t, p.where, spec)
		deadline := p.s.duration(t, p.where, "shutdown-timeout")
		if need := preStopSeconds(t, p.where, p.c) + deadline + graceMargin; grace < need {
			t.Errorf("%s: terminationGracePeriodSeconds %s < --shutdown-timeout %s + margin %s", p.where, grace, deadline, graceMargin)
		}
		checkGoMemLimit(t, p.where, p.c)

	}
	if want := m.top.natsMode == "statefulset"; want != (n > 0) {
		t.Errorf("NATS mode %s: %d fabric nats containers", m.top.natsMode, n)
	}
}

// podAddress resolves scheme://<sts>-<i>.<service>[...]:port to the
// replica ordinal and the container port the headless Service sends it to.
func (m *manifests) podAddress(t *testing.T, where string, sts *appsv1.StatefulSet, scheme, raw string) (int, int32) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != scheme || u.Port() == "" {
		t.Errorf("%s: %q: want %s://host:port", where, raw, scheme)
		return -1, 0
	}
	labelsOf := strings.Split(u.Hostname(), ".")
	pod, svcName := labelsOf[0], ""
	if len(labelsOf) > 1 {
		svcName = labelsOf[1]
	}
	ord, err := strconv.Atoi(strings.TrimPrefix(pod, sts.Name+"-"))
	if !strings.HasPrefix(pod, sts.Name+"-") || err != nil || ord < 0 || sts.Spec.Replicas == nil || ord >= int(*sts.Spec.Replicas) {
		t.Errorf("%s: %q: host is no pod of StatefulSet %s", where, raw, sts.Name)
		return -1, 0
	}
	if svcName != sts.Spec.ServiceName {
		t.Errorf("%s: %q: pod DNS names go through the governing Service %s", where, raw, sts.Spec.ServiceName)
		return -1, 0
	}
	svc, ok := m.services[svcName]
	if !ok || svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("%s: %q: Service %s must exist and be headless (clusterIP: None) for per-pod DNS", where, raw, svcName)
		return -1, 0
	}
	port, _ := strconv.Atoi(u.Port())
	return ord, m.servicePort(t, where, svc, int32(port))
}

// servicePort follows a Service port to the container port behind it (for
// a headless Service a client dials the container port directly).
func (m *manifests) servicePort(t *testing.T, where string, svc *corev1.Service, port int32) int32 {
	t.Helper()
	ws := m.selected(labels.SelectorFromSet(svc.Spec.Selector))
	if len(ws) != 1 {
		t.Errorf("%s: Service %s selects %d workloads", where, svc.Name, len(ws))
		return 0
	}
	for _, sp := range svc.Spec.Ports {
		if sp.Port != port {
			continue
		}
		tp := sp.TargetPort
		if tp.Type == intstr.Int && tp.IntVal == 0 {
			tp = intstr.FromInt32(sp.Port)
		}
		cp, _, ok := containerPort(&ws[0].template.Spec, tp)
		if !ok {
			t.Errorf("%s: Service %s port %d targets no container port", where, svc.Name, port)
			return 0
		}
		if svc.Spec.ClusterIP == corev1.ClusterIPNone && cp.ContainerPort != port {
			t.Errorf("%s: headless Service %s: clients dial pod IPs, so port %d must be the container port (%d)", where, svc.Name, port, cp.ContainerPort)
		}
		return cp.ContainerPort
	}
	t.Errorf("%s: Service %s has no port %d", where, svc.Name, port)
	return 0
}

// TestGatewayReachesNATS: every --nats-url entry is a NATS pod (or a
// Service in front of them) at the port its `fabric nats --listen` uses.
func TestGatewayReachesNATS(t *testing.T) { checkGatewayReachesNATS(t, indexManifests(t)) }

func checkGatewayReachesNATS(t *testing.T, m *manifests) {
	if m.top.natsMode == "embedded" {
		return // checkGatewayPods: the gateways are the cluster
	}
	procs := m.fabricProcesses(t)
	natsPort := map[string]int32{} // StatefulSet name -> client port
	var stss []*appsv1.StatefulSet
	for _, p := range procs {
		if p.sub == "nats" && p.w.sts != nil {
			_, port, err := net.SplitHostPort(p.s.get("listen"))
			if err == nil {
				n, _ := strconv.Atoi(port)
				natsPort[p.w.name] = int32(n)
				stss = append(stss, p.w.sts)
			}
		}
	}
	for _, p := range procs {
		if p.sub != "serve" {
			continue
		}
		urls := strings.Split(p.s.get("nats-url"), ",")
		if len(urls) < 2 {
			t.Errorf("%s: --nats-url lists %d server(s); list every node so the gateway fails over", p.where, len(urls))
		}
		for _, raw := range urls {
			raw = strings.TrimSpace(raw)
			host := raw
			if u, err := url.Parse(raw); err == nil {
				host = u.Hostname()
			}
			if m.top.natsMode == "external" {
				if u, err := url.Parse(raw); err != nil || (u.Scheme != "nats" && u.Scheme != "tls") || u.Port() == "" || u.User != nil {
					t.Errorf("%s: --nats-url %q: want nats:// or tls://host:port, credentials from a Secret (not in the URL)", p.where, raw)
				}
				continue
			}
			var sts *appsv1.StatefulSet
			for _, s := range stss {
				if strings.HasPrefix(host, s.Name+"-") {
					sts = s
				}
			}
			if sts == nil {
				t.Errorf("%s: --nats-url %q is no pod of a fabric nats StatefulSet in deploy/k8s", p.where, raw)
				continue
			}
			if _, port := m.podAddress(t, p.where, sts, "nats", raw); port != 0 && port != natsPort[sts.Name] {
				t.Errorf("%s: --nats-url %q reaches port %d, fabric nats listens on %d", p.where, raw, port, natsPort[sts.Name])
			}
		}
	}
}

// TestPodSecurity: every container of every workload runs as non-root with
// a read-only root file system, no privilege escalation, no capabilities,
// and bounded resources.
func TestPodSecurity(t *testing.T) { checkPodSecurity(t, indexManifests(t)) }

func checkPodSecurity(t *testing.T, m *manifests) {
	for _, w := range m.workloads {
		spec := &w.template.Spec
		psc := spec.SecurityContext
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: automountServiceAccountToken must be false: Fabric never calls the Kubernetes API", w.where)
		}
		if spec.HostNetwork || spec.HostPID || spec.HostIPC {
			t.Errorf("%s: host namespaces", w.where)
		}
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			where := w.where + " container " + c.Name
			sc := c.SecurityContext
			nonRoot := (sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot) ||
				(!(sc != nil && sc.RunAsNonRoot != nil) && psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot)
			if !nonRoot {
				t.Errorf("%s: runAsNonRoot is not true", where)
			}
			uid := (*int64)(nil)
			if psc != nil {
				uid = psc.RunAsUser
			}
			if sc != nil && sc.RunAsUser != nil {
				uid = sc.RunAsUser
			}
			if uid == nil || *uid == 0 {
				t.Errorf("%s: runAsUser must be set to a non-zero uid (the image's is 65532)", where)
			}
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: readOnlyRootFilesystem is not true", where)
			}
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation is not false", where)
			}
			if sc != nil && sc.Privileged != nil && *sc.Privileged {
				t.Errorf("%s: privileged", where)
			}
			if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: capabilities must drop ALL and add none", where)
			}
			seccomp := (sc != nil && sc.SeccompProfile != nil) || (psc != nil && psc.SeccompProfile != nil)
			if !seccomp {
				t.Errorf("%s: no seccompProfile", where)
			}
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				req, okReq := c.Resources.Requests[r]
				lim, okLim := c.Resources.Limits[r]
				if !okReq || !okLim {
					t.Errorf("%s: resources: want %s request and limit", where, r)
					continue
				}
				if req.Cmp(lim) > 0 {
					t.Errorf("%s: %s request %s over its limit %s", where, r, req.String(), lim.String())
				}
			}
			if c.Image == "" || strings.HasSuffix(c.Image, ":latest") {
				t.Errorf("%s: image %q: pin a tag", where, c.Image)
			}
		}
	}
}

// TestDisruptionBudgets: one PDB per workload, selecting exactly its pods
// and leaving room for a voluntary eviction (and, for NATS, a quorum).
func TestDisruptionBudgets(t *testing.T) { checkDisruptionBudgets(t, indexManifests(t)) }

func checkDisruptionBudgets(t *testing.T, m *manifests) {
	covered := map[string]bool{}
	for _, pdb := range m.pdbs {
		where := "PodDisruptionBudget/" + pdb.Name
		sel := mustSelector(t, where, pdb.Spec.Selector)
		ws := m.selected(sel)
		if len(ws) != 1 {
			t.Errorf("%s: selector %s matches %d workloads' pods, want 1", where, sel, len(ws))
			continue
		}
		w := ws[0]
		if covered[w.where] {
			t.Errorf("%s: a second PDB for %s (evictions then fail)", where, w.where)
		}
		covered[w.where] = true
		if (pdb.Spec.MaxUnavailable == nil) == (pdb.Spec.MinAvailable == nil) {
			t.Errorf("%s: set exactly one of maxUnavailable, minAvailable", where)
			continue
		}
		if mu := pdb.Spec.MaxUnavailable; mu != nil {
			if mu.Type != intstr.Int || mu.IntVal < 1 {
				t.Errorf("%s: maxUnavailable %s: want a count ≥ 1, or no node can ever be drained", where, mu.String())
			}
			if w.sts != nil && w.replicas != nil && mu.Type == intstr.Int && mu.IntVal > (*w.replicas-1)/2 {
				t.Errorf("%s: maxUnavailable %d of %d NATS nodes loses the Raft quorum", where, mu.IntVal, *w.replicas)
			}
		} else if ma := pdb.Spec.MinAvailable; ma.Type != intstr.Int || w.replicas == nil || ma.IntVal >= *w.replicas {
			t.Errorf("%s: minAvailable %s leaves no eviction possible", where, ma.String())
		}
	}
	for _, w := range m.workloads {
		if !covered[w.where] {
			t.Errorf("%s: no PodDisruptionBudget", w.where)
		}
	}
}

// TestAutoscaler: the HPA scales the gateway Deployment on the per-pod
// custom metric fabric_connections, which the prometheus-adapter rule in
// deploy/k8s serves.
func TestAutoscaler(t *testing.T) { checkAutoscaler(t, indexManifests(t)) }

func checkAutoscaler(t *testing.T, m *manifests) {
	if !m.top.hpa {
		if len(m.hpas) > 0 {
			t.Errorf("autoscaling off, yet %d HorizontalPodAutoscaler(s)", len(m.hpas))
		}
		for _, w := range m.workloads {
			if w.replicas == nil || *w.replicas < 2 {
				t.Errorf("%s: without an HPA set replicas ≥ 2 (one pod drains while another takes its clients)", w.where)
			}
		}
		return
	}
	if len(m.hpas) == 0 {
		t.Fatal("no HorizontalPodAutoscaler")
	}
	adapted := adapterMetrics(t, m)
	for _, h := range m.hpas {
		where := "HorizontalPodAutoscaler/" + h.Name
		ref := h.Spec.ScaleTargetRef
		d, ok := m.deployments[ref.Name]
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || !ok {
			t.Errorf("%s: scaleTargetRef %s %s/%s is no Deployment in deploy/k8s", where, ref.APIVersion, ref.Kind, ref.Name)
			continue
		}
		if d.Spec.Replicas != nil {
			t.Errorf("%s: Deployment %s sets replicas: every re-apply would reset what the HPA chose", where, d.Name)
		}
		if len(d.Spec.Template.Spec.Containers) == 0 || len(d.Spec.Template.Spec.Containers[0].Args) == 0 || d.Spec.Template.Spec.Containers[0].Args[0] != "serve" {
			t.Errorf("%s: targets %s, which is not the gateway", where, d.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 {
			t.Errorf("%s: minReplicas < 2: a drain would leave no gateway for its clients", where)
		} else if h.Spec.MaxReplicas <= *h.Spec.MinReplicas {
			t.Errorf("%s: maxReplicas %d ≤ minReplicas", where, h.Spec.MaxReplicas)
		}
		found := false
		for _, ms := range h.Spec.Metrics {
			if ms.Type != autoscalingv2.PodsMetricSourceType || ms.Pods == nil || ms.Pods.Metric.Name != "fabric_connections" {
				continue
			}
			found = true
			tg := ms.Pods.Target
			if tg.Type != autoscalingv2.AverageValueMetricType || tg.AverageValue == nil || tg.AverageValue.Sign() <= 0 {
				t.Errorf("%s: fabric_connections: want a positive AverageValue target (connections per pod)", where)
			}
			if !adapted["fabric_connections"] {
				t.Errorf("%s: no prometheus-adapter rule in deploy/k8s serves fabric_connections", where)
			}
		}
		if !found {
			t.Errorf("%s: no Pods metric fabric_connections", where)
		}
		if b := h.Spec.Behavior; b == nil || b.ScaleDown == nil || b.ScaleDown.StabilizationWindowSeconds == nil || *b.ScaleDown.StabilizationWindowSeconds < 300 {
			t.Errorf("%s: scale down must be slow (stabilization ≥ 300 s): each removed gateway moves its clients", where)
		}
	}
}

// adapterMetrics reads prometheus-adapter rules from ConfigMaps carrying a
// config.yaml with rules, and returns the custom metric names they serve.
func adapterMetrics(t *testing.T, m *manifests) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, cm := range m.configMaps {
		data, ok := cm.Data["config.yaml"]
		if !ok {
			continue
		}
		var cfg struct {
			Rules []struct {
				SeriesQuery string `yaml:"seriesQuery"`
				Resources   struct {
					Overrides map[string]struct {
						Resource string `yaml:"resource"`
					} `yaml:"overrides"`
				} `yaml:"resources"`
				Name struct {
					Matches string `yaml:"matches"`
					As      string `yaml:"as"`
				} `yaml:"name"`
				MetricsQuery string `yaml:"metricsQuery"`
			} `yaml:"rules"`
		}
		dec := yaml.NewDecoder(strings.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			t.Errorf("ConfigMap %s config.yaml: %v", cm.Name, err)
			continue
		}
		for i, r := range cfg.Rules {
			where := fmt.Sprintf("ConfigMap %s rule %d", cm.Name, i)
			series := regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`).FindString(r.SeriesQuery)
			if !knownMetric(series) {
				t.Errorf("%s: seriesQuery metric %q is no Fabric metric", where, series)
			}
			if r.Resources.Overrides["pod"].Resource != "pod" || r.Resources.Overrides["namespace"].Resource != "namespace" {
				t.Errorf("%s: map the pod and namespace labels to their resources (a Pods metric needs both)", where)
			}
			if !strings.Contains(r.MetricsQuery, "<<.Series>>") || !strings.Contains(r.MetricsQuery, "<<.LabelMatchers>>") || !strings.Contains(r.MetricsQuery, "<<.GroupBy>>") {
				t.Errorf("%s: metricsQuery must use <<.Series>>, <<.LabelMatchers>> and <<.GroupBy>>", where)
			}
			re, err := regexp.Compile(r.Name.Matches)
			if err != nil || !re.MatchString(series) {
				t.Errorf("%s: name.matches %q does not match %q", where, r.Name.Matches, series)
				continue
			}
			name := series
			if r.Name.As != "" {
				name = re.ReplaceAllString(series, r.Name.As)
			}
			out[name] = true
		}
	}
	return out
}

// TestServiceMonitor: it selects the ops Service, whose port leads to the
// gateway's --ops-listen, and scrapes /metrics there.
func TestServiceMonitor(t *testing.T) { checkServiceMonitor(t, indexManifests(t)) }

func checkServiceMonitor(t *testing.T, m *manifests) {
	if len(m.monitors) == 0 {
		t.Fatal("no ServiceMonitor")
	}
	opsPorts := map[string]int32{} // workload -> ops listener port
	for _, p := range m.fabricProcesses(t) {
		if p.sub == "serve" {
			_, port, _ := net.SplitHostPort(p.s.get("ops-listen"))
			n, _ := strconv.Atoi(port)
			opsPorts[p.w.where] = int32(n)
		}
	}
	for _, sm := range m.monitors {
		where := "ServiceMonitor/" + sm.Name
		sel := mustSelector(t, where, &sm.Spec.Selector)
		var svcs []*corev1.Service
		for _, svc := range m.services {
			if sel.Matches(labels.Set(svc.Labels)) {
				svcs = append(svcs, svc)
			}
		}
		if len(svcs) != 1 {
			t.Errorf("%s: selects %d Services, want 1", where, len(svcs))
			continue
		}
		svc := svcs[0]
		ws := m.selected(labels.SelectorFromSet(svc.Spec.Selector))
		if len(ws) != 1 {
			t.Errorf("%s: Service %s selects %d workloads", where, svc.Name, len(ws))
			continue
		}
		ops, isGateway := opsPorts[ws[0].where]
		if !isGateway {
			t.Errorf("%s: scrapes %s, which runs no fabric serve", where, ws[0].where)
		}
		if len(sm.Spec.Endpoints) == 0 {
			t.Errorf("%s: no endpoints", where)
		}
		for _, ep := range sm.Spec.Endpoints {
			if ep.Path != "/metrics" {
				t.Errorf("%s: path %q, want /metrics", where, ep.Path)
			}
			var sp *corev1.ServicePort
			for i := range svc.Spec.Ports {
				if svc.Spec.Ports[i].Name == ep.Port {
					sp = &svc.Spec.Ports[i]
				}
			}
			if sp == nil {
				t.Errorf("%s: port %q is no named port of Service %s", where, ep.Port, svc.Name)
				continue
			}
			if got := m.servicePort(t, where, svc, sp.Port); got != ops {
				t.Errorf("%s: scrapes container port %d, --ops-listen is %d", where, got, ops)
			}
			if ep.Interval != "" {
				iv, err1 := time.ParseDuration(string(ep.Interval))
				to, err2 := time.ParseDuration(string(ep.ScrapeTimeout))
				if err1 != nil || (ep.ScrapeTimeout != "" && (err2 != nil || to > iv)) {
					t.Errorf("%s: interval %q / scrapeTimeout %q", where, ep.Interval, ep.ScrapeTimeout)
				}
			}
		}
	}
	// The public Service must not carry the ops port.
	for _, svc := range m.services {
		if sel := svc.Spec.Selector; len(sel) == 0 {
			continue
		}
		ws := m.selected(labels.SelectorFromSet(svc.Spec.Selector))
		if len(ws) != 1 {
			continue
		}
		if _, gw := opsPorts[ws[0].where]; !gw {
			continue
		}
		hasHTTP, hasOps := false, false
		for _, sp := range svc.Spec.Ports {
			cp, _, _ := containerPort(&ws[0].template.Spec, sp.TargetPort)
			hasOps = hasOps || cp.Name == "ops"
			hasHTTP = hasHTTP || cp.Name == "http"
		}
		if hasHTTP && hasOps {
			t.Errorf("Service/%s: mixes the public port with the ops port (/debug/pprof, /metrics): keep ops on its own Service", svc.Name)
		}
	}
}

// checkCluster: a Raft member (fabric nats, or a gateway's embedded
// server) takes its stable pod name as its server name, routes to every
// replica of its StatefulSet by DNS name at the route port, and is kept
// off the machine of another member.
func (m *manifests) checkCluster(t *testing.T, p fabricProcess, nameFlag string, route int32) {
	t.Helper()
	sts := p.w.sts
	// The server name must be the pod name (stable per ordinal) or the
	// Raft identity changes on every restart.
	name := p.s.get(nameFlag)
	ref := regexp.MustCompile(`^\$\(([A-Z_][A-Z0-9_]*)\)$`).FindStringSubmatch(name)
	ok := false
	for _, e := range p.c.Env {
		if ref != nil && e.Name == ref[1] && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
			ok = true
		}
	}
	if !ok {
		t.Errorf("%s: --%s=%q: want $(VAR) with VAR from fieldRef metadata.name", p.where, nameFlag, name)
	}

	// Routes: every replica, by its stable DNS name, at the route port.
	if p.s.get("cluster-name") == "" {
		t.Errorf("%s: no --cluster-name", p.where)
	}
	seen := map[int]bool{}
	for _, r := range strings.Split(p.s.get("routes"), ",") {
		i, port := m.podAddress(t, p.where, sts, "nats-route", strings.TrimSpace(r))
		if i >= 0 {
			seen[i] = true
			if port != route {
				t.Errorf("%s: route %s reaches container port %d, --cluster-listen is %d", p.where, r, port, route)
			}
		}
	}
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas < 3 {
		t.Errorf("%s: want ≥ 3 replicas for an R3 JetStream cluster", p.where)
	} else if len(seen) != int(*sts.Spec.Replicas) {
		t.Errorf("%s: --routes name %d of the %d replicas", p.where, len(seen), *sts.Spec.Replicas)
	}

	// Two members on one machine lose quorum with it.
	aff := p.w.template.Spec.Affinity
	okAff := false
	if aff != nil && aff.PodAntiAffinity != nil {
		for _, term := range aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
			if err == nil && term.TopologyKey == "kubernetes.io/hostname" && !sel.Empty() && sel.Matches(labels.Set(p.w.template.Labels)) {
				okAff = true
			}
		}
	}
	if !okAff {
		t.Errorf("%s: want required podAntiAffinity on kubernetes.io/hostname selecting its own pods", p.where)
	}
}

// checkOnClaim: the store must be on a volume claim (the root file system
// is read-only, and the store must outlive the pod).
func (m *manifests) checkOnClaim(t *testing.T, p fabricProcess, dir string) {
	t.Helper()
	onClaim := false
	for _, vm := range p.c.VolumeMounts {
		if rel, err := filepath.Rel(vm.MountPath, dir); err == nil && !strings.HasPrefix(rel, "..") && !vm.ReadOnly {
			for _, vct := range p.w.sts.Spec.VolumeClaimTemplates {
				onClaim = onClaim || vct.Name == vm.Name
			}
		}
	}
	if !onClaim {
		t.Errorf("%s: store %s is on no writable volumeClaimTemplate mount", p.where, dir)
	}
}

package deploy_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fabric-rt/fabric/deploy/chart"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// chartVariants: the value files in the chart's ci/ directory and what each
// deploys. jwt-values.yaml is the defaults plus the one required choice
// (how tokens are verified); deploy/k8s/fabric.yaml is rendered from it.
var chartVariants = []struct {
	file string
	top  topology
}{
	{"jwt-values.yaml", topology{natsMode: "statefulset", hpa: true}},
	{"external-tls-values.yaml", topology{natsMode: "external", hpa: true}},
	{"embedded-values.yaml", topology{natsMode: "embedded", hpa: false}},
	{"hpa-off-values.yaml", topology{natsMode: "statefulset", hpa: false}},
}

func ciValues(name string) string { return filepath.Join(chart.Dir, "ci", name) }

// TestChartCIValuesListed: every ci/ values file is one of chartVariants.
func TestChartCIValuesListed(t *testing.T) {
	files, err := filepath.Glob(ciValues("*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, v := range chartVariants {
		want = append(want, ciValues(v.file))
	}
	slices.Sort(files)
	slices.Sort(want)
	if !slices.Equal(files, want) {
		t.Errorf("ci/ holds %v, chartVariants lists %v", files, want)
	}
}

// TestChartLint is `helm lint` with each values file: no error or warning.
func TestChartLint(t *testing.T) {
	for _, v := range chartVariants {
		msgs, err := chart.Lint(chart.Dir, ciValues(v.file))
		if err != nil {
			t.Fatalf("%s: %v", v.file, err)
		}
		for _, m := range msgs {
			t.Errorf("helm lint -f ci/%s: %s", v.file, m)
		}
	}
}

// TestChartLintFindsErrors: the linter does report a broken chart (so a
// clean lint above means something).
func TestChartLintFindsErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(chart.Dir)); err != nil {
		t.Fatal(err)
	}
	tpl := filepath.Join(dir, "templates", "pdb.yaml")
	if err := os.WriteFile(tpl, []byte("{{ if }}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	msgs, err := chart.Lint(dir, ciValues("jwt-values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) == 0 {
		t.Error("helm lint found nothing wrong in a template that does not parse")
	}
}

// renderVariant is `helm template` with one values file, every object
// strictly decoded into its Kubernetes type, plus the prometheus-adapter
// rule the HPA relies on (installed with the adapter, not the chart).
func renderVariant(t *testing.T, valuesFile string, top topology) *manifests {
	t.Helper()
	files, err := chart.Template(chart.Dir, valuesFile)
	if err != nil {
		t.Fatalf("helm template -f %s: %v", valuesFile, err)
	}
	var objs []k8sObject
	for _, f := range files {
		objs = append(objs, decodeDocs(t, f.Name, []byte(f.Body))...)
	}
	rules := "k8s/prometheus-adapter/adapter-rules.yaml"
	data, err := os.ReadFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	objs = append(objs, decodeDocs(t, rules, data)...)
	if t.Failed() {
		t.FailNow()
	}
	return indexObjects(t, objs, top)
}

// TestChartVariants renders the chart with each values file and runs on
// the result every check the plain manifests get.
func TestChartVariants(t *testing.T) {
	for _, v := range chartVariants {
		t.Run(strings.TrimSuffix(v.file, ".yaml"), func(t *testing.T) {
			m := renderVariant(t, ciValues(v.file), v.top)
			checkDecoded(t, m)
			checkWorkloadSelectors(t, m)
			checkFabricCommandLines(t, m)
			checkGatewayPods(t, m)
			checkNATSPods(t, m)
			checkGatewayReachesNATS(t, m)
			checkPodSecurity(t, m)
			checkDisruptionBudgets(t, m)
			checkAutoscaler(t, m)
			checkServiceMonitor(t, m)
			checkNetworkPolicies(t, m)
			checkSecretFiles(t, m)
		})
	}
}

func TestNetworkPolicies(t *testing.T) { checkNetworkPolicies(t, indexManifests(t)) }
func TestSecretFiles(t *testing.T)     { checkSecretFiles(t, indexManifests(t)) }

// checkNetworkPolicies: every workload's pods are selected by a policy;
// the gateways' ops port (metrics, no authentication) admits only listed
// peers, never everyone; the NATS ports of nodes that run without users
// (--allow-no-auth) admit only selected pods.
func checkNetworkPolicies(t *testing.T, m *manifests) {
	var pols []*networkingv1.NetworkPolicy
	for _, o := range m.objs {
		if np, ok := o.obj.(*networkingv1.NetworkPolicy); ok {
			pols = append(pols, np)
		}
	}
	procs := m.fabricProcesses(t)
	for _, p := range procs {
		var mine []*networkingv1.NetworkPolicy
		for _, np := range pols {
			sel := mustSelector(t, "NetworkPolicy/"+np.Name, &np.Spec.PodSelector)
			if sel.Matches(labels.Set(p.w.template.Labels)) {
				mine = append(mine, np)
			}
		}
		if len(mine) == 0 {
			t.Errorf("%s: no NetworkPolicy selects its pods", p.where)
			continue
		}
		restricted := []string{}
		if p.sub == "serve" {
			restricted = append(restricted, "ops")
			if p.s.get("cluster-name") != "" && p.s.get("nats-url") == "" {
				restricted = append(restricted, "cluster")
			}
		} else if p.s.get("allow-no-auth") == "true" {
			restricted = append(restricted, "client", "cluster")
		}
		for _, port := range restricted {
			cp := namedPort(t, p.where, p.c, port)
			for _, np := range mine {
				for i, rule := range np.Spec.Ingress {
					if !ruleCoversPort(rule, port, cp) {
						continue
					}
					if len(rule.From) == 0 {
						t.Errorf("NetworkPolicy/%s ingress %d: lets everyone reach %s port %s", np.Name, i, p.where, port)
					}
					for _, peer := range rule.From {
						if peer.IPBlock != nil && (peer.IPBlock.CIDR == "0.0.0.0/0" || peer.IPBlock.CIDR == "::/0") {
							t.Errorf("NetworkPolicy/%s ingress %d: %s port %s open to %s", np.Name, i, p.where, port, peer.IPBlock.CIDR)
						}
						if peer.PodSelector != nil && peer.NamespaceSelector != nil && len(peer.PodSelector.MatchLabels)+len(peer.PodSelector.MatchExpressions) == 0 &&
							len(peer.NamespaceSelector.MatchLabels)+len(peer.NamespaceSelector.MatchExpressions) == 0 {
							t.Errorf("NetworkPolicy/%s ingress %d: %s port %s open to every pod of every namespace", np.Name, i, p.where, port)
						}
					}
				}
			}
		}
		// Port names in policies must be container ports of the pods.
		for _, np := range mine {
			for _, rule := range np.Spec.Ingress {
				for _, pp := range rule.Ports {
					if pp.Port == nil {
						continue
					}
					if _, _, ok := containerPort(&p.w.template.Spec, *pp.Port); !ok {
						t.Errorf("NetworkPolicy/%s: port %s is no container port of %s", np.Name, pp.Port.String(), p.where)
					}
				}
			}
		}
	}
}

func ruleCoversPort(rule networkingv1.NetworkPolicyIngressRule, name string, number int32) bool {
	if len(rule.Ports) == 0 {
		return true
	}
	for _, pp := range rule.Ports {
		if pp.Port == nil || pp.Port.StrVal == name || pp.Port.IntVal == number {
			return true
		}
	}
	return false
}

// checkSecretFiles: every file flag holding a key or credential points into
// a read-only Secret volume that carries that file (never a ConfigMap or
// the image), and secrets given as variables come from Secrets.
func checkSecretFiles(t *testing.T, m *manifests) {
	fileFlags := map[string][]string{
		"serve": {"jwt-public-key", "nats-creds", "nats-nkey", "nats-tls-ca", "nats-tls-cert", "nats-tls-key", "nats-config"},
		"nats":  {"config"},
	}
	for _, p := range m.fabricProcesses(t) {
		for _, f := range fileFlags[p.sub] {
			path := p.s.get(f)
			if path == "" {
				continue
			}
			if !onSecretVolume(&p.w.template.Spec, p.c, path) {
				t.Errorf("%s: --%s=%s is on no read-only Secret volume that holds that file", p.where, f, path)
			}
		}
		for _, e := range p.c.Env {
			if !slices.Contains([]string{"FABRIC_JWT_SECRET", "FABRIC_PUBLISH_API_KEYS", "FABRIC_LONGPOLL_SECRET", "FABRIC_NATS_TOKEN", "FABRIC_NATS_PASSWORD"}, e.Name) {
				continue
			}
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				t.Errorf("%s: %s must come from a Secret (secretKeyRef), not a literal value", p.where, e.Name)
			}
		}
		for _, a := range p.c.Args {
			for _, f := range []string{"jwt-secret", "publish-api-keys", "longpoll-secret", "nats-password", "nats-token"} {
				if strings.HasPrefix(strings.TrimLeft(a, "-"), f+"=") || strings.TrimLeft(a, "-") == f {
					t.Errorf("%s: --%s on the command line (visible in the pod spec and ps); use its FABRIC_ variable from a Secret", p.where, f)
				}
			}
		}
	}
}

func onSecretVolume(spec *corev1.PodSpec, c *corev1.Container, path string) bool {
	for _, vm := range c.VolumeMounts {
		rel, err := filepath.Rel(vm.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") || rel == "." || !vm.ReadOnly {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != vm.Name || v.Secret == nil {
				continue
			}
			if len(v.Secret.Items) == 0 {
				return true // every key of the Secret is a file
			}
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					return true
				}
			}
		}
	}
	return false
}

// TestPlainManifestsUpToDate: deploy/k8s/fabric.yaml is exactly what
// `task k8s` renders from the chart, so the two cannot drift.
func TestPlainManifestsUpToDate(t *testing.T) {
	want, err := chart.Plain(chart.Dir, chart.PlainValues)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(chart.PlainFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("deploy/%s is not what the chart renders: run `task k8s` (cd deploy && go run ./cmd/k8s-manifests) and commit it", chart.PlainFile)
	}
}

// TestChartRefusesInsecureOrBroken: values the schema accepts but that
// would start an insecure or broken install fail to render, each with a
// message naming what to set.
func TestChartRefusesInsecureOrBroken(t *testing.T) {
	for _, tc := range []struct {
		name, values, want string
	}{
		{"defaults: no JWT key, no anonymous opt-in", "", "auth: set auth.jwt.secretName"},
		{"anonymous and JWT", "auth: {allowAnonymous: true, jwt: {secretName: k}}", "choose one"},
		{"NATS without users and without NetworkPolicy", "auth: {jwt: {secretName: k}}\nnetworkPolicy: {enabled: false}", "NetworkPolicy"},
		{"embedded with HPA", "auth: {jwt: {secretName: k}}\nnats: {mode: embedded, auth: {secretName: s, tokenKey: t}, embedded: {configSecretName: c}}", "autoscaling.enabled=false"},
		{"embedded without config", "auth: {jwt: {secretName: k}}\nautoscaling: {enabled: false}\nnats: {mode: embedded, auth: {secretName: s, tokenKey: t}}", "configSecretName: required"},
		{"external without URLs", "auth: {jwt: {secretName: k}}\nnats: {mode: external}", "needs nats.external.urls"},
		{"URLs without external", "auth: {jwt: {secretName: k}}\nnats: {external: {urls: [nats://a:4222]}}", "set nats.mode=external"},
		{"drain window over the deadline", "auth: {jwt: {secretName: k}}\ngateway: {drainWindowSeconds: 29, shutdownTimeoutSeconds: 30}", "drainWindowSeconds (29)"},
		{"two NATS logins", "auth: {jwt: {secretName: k}}\nnats: {auth: {secretName: s, tokenKey: t, credsKey: c}}", "exactly one of"},
		{"TLS without its Secret", "auth: {jwt: {secretName: k}}\nnats: {mode: external, external: {urls: [tls://a:4222]}, tls: {enabled: true}}", "nats.tls.secretName"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := ""
			if tc.values != "" {
				f = filepath.Join(t.TempDir(), "values.yaml")
				if err := os.WriteFile(f, []byte(tc.values), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := chart.Template(chart.Dir, f)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template: err %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestChartAnonymousOptIn: auth.allowAnonymous=true is the one way to an
// open install, and it shows in the command line (the only render where
// secureDefaults objects).
func TestChartAnonymousOptIn(t *testing.T) {
	f := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(f, []byte("auth: {allowAnonymous: true}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := renderVariant(t, f, topology{natsMode: "statefulset", hpa: true, optIn: true})
	n := 0
	for _, p := range m.fabricProcesses(t) {
		if p.sub == "serve" {
			n++
			if len(secureDefaults(p.s)) != 1 || p.s.get("allow-anonymous") != "true" {
				t.Errorf("%s: --allow-anonymous not passed: %v", p.where, p.c.Args)
			}
		}
	}
	if n == 0 {
		t.Fatal("no gateway rendered")
	}
}

// TestChartSchemaRejects: each file in testdata/bad-values breaks
// values.schema.json and fails before any template runs, with the schema's
// message (the first line of the file says what is wrong).
func TestChartSchemaRejects(t *testing.T) {
	files, err := filepath.Glob("testdata/bad-values/*.yaml")
	if err != nil || len(files) < 5 {
		t.Fatalf("want ≥ 5 bad values files, got %d (%v)", len(files), err)
	}
	for _, f := range files {
		_, err := chart.Template(chart.Dir, f)
		if err == nil || !strings.Contains(err.Error(), "schema") {
			t.Errorf("%s: rendered or failed for another reason than the schema: %v", f, err)
		}
	}
}

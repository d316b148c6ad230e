package deploy_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
)

// TestEmbeddedChartFormsCluster runs the chart's embedded-mode command line
// for real: three `fabric serve` processes with the rendered StatefulSet's
// flags (addresses moved to free loopback ports, $(POD_NAME) and the
// mounted files replaced by local ones) must form one JetStream cluster
// and all become ready. It caught --nats-listen=off, with which
// nats-server starts no route listener and the cluster never forms.
func TestEmbeddedChartFormsCluster(t *testing.T) {
	m := renderVariant(t, ciValues("embedded-values.yaml"), topology{natsMode: "embedded"})
	var sts *appsv1.StatefulSet
	for _, w := range m.workloads {
		if w.sts != nil {
			sts = w.sts
		}
	}
	if sts == nil || len(sts.Spec.Template.Spec.Containers) != 1 {
		t.Fatal("embedded values render no gateway StatefulSet")
	}
	c := sts.Spec.Template.Spec.Containers[0]
	const n = 3
	dir := t.TempDir()
	cfg := filepath.Join(dir, "fabric.yaml")
	if err := os.WriteFile(cfg, []byte(m.configMaps[sts.Name].Data["fabric.yaml"]), 0o644); err != nil {
		t.Fatal(err)
	}
	natsConf := filepath.Join(dir, "nats.conf")
	// What nats.embedded.configSecretName must hold (docs/kubernetes.md).
	if err := os.WriteFile(natsConf, []byte("authorization { users: [{user: gateway, password: gwpass}] }\n"+
		"cluster { authorization { user: route, password: routepass } }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type node struct{ client, ops, nats, route string }
	nodes := make([]node, n)
	// Each node on its own loopback address, picked at random: other
	// tests on this machine take ports of 127.0.0.1 between our probe for
	// a free port and the process binding it.
	base := 2 + int(time.Now().UnixNano()%200)
	for i := range nodes {
		host := fmt.Sprintf("127.0.%d.%d", base, 10+i)
		nodes[i] = node{freeAddr(t, host), freeAddr(t, host), freeAddr(t, host), freeAddr(t, host)}
	}
	var routes []string
	for _, nd := range nodes {
		routes = append(routes, "nats-route://"+nd.route)
	}
	bin := fabricBinary(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exits := make([]chan struct{}, n)
	for i, nd := range nodes {
		var args []string
		for _, a := range c.Args {
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			switch name {
			case "listen":
				a = "--listen=" + nd.client
			case "ops-listen":
				a = "--ops-listen=" + nd.ops
			case "nats-listen":
				a = "--nats-listen=" + nd.nats
			case "cluster-listen":
				a = "--cluster-listen=" + nd.route
			case "routes":
				a = "--routes=" + strings.Join(routes, ",")
			case "nats-name":
				a = fmt.Sprintf("--nats-name=gateway-%d", i)
			case "config":
				a = "--config=" + cfg
			case "nats-config":
				a = "--nats-config=" + natsConf
			case "data-dir":
				a = "--data-dir=" + filepath.Join(dir, fmt.Sprintf("data-%d", i))
			case "jwks-url":
				continue // no network here: an HS256 key below instead
			case "drain-window", "shutdown-timeout":
				a = "--" + name + "=2s"
			}
			args = append(args, a)
		}
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), "FABRIC_NATS_PASSWORD=gwpass", "FABRIC_JWT_SECRET="+strings.Repeat("k", 32))
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("log-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		exits[i] = exited
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
			logf.Close()
		})
	}
	deadline := time.Now().Add(150 * time.Second) // JetStream meta leader election on a loaded machine
	client := &http.Client{Timeout: 2 * time.Second}
	for i, nd := range nodes {
		for {
			resp, err := client.Get("http://" + nd.ops + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			exited := false
			select {
			case <-exits[i]:
				exited = true
			default:
			}
			if exited || time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("log-%d", i)))
				if len(log) > 4000 {
					log = log[len(log)-4000:]
				}
				t.Fatalf("gateway-%d not ready (exited %v, %v): the embedded cluster did not form\n%s", i, exited, err, log)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}

func freeAddr(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

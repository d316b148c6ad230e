// Package presence holds end-to-end tests of cluster-wide Presence: two
// Fabrics sharing one NATS, the real phoenix.js client (with its Presence
// class) on each, and a gateway killed with SIGKILL.
package presence

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
	"github.com/fabric-rt/fabric/internal/testkit/proctest"
)

const (
	wait = 10 * time.Second
	ttl  = 2 * time.Second
)

func namespaces() map[string]namespace.Namespace {
	return map[string]namespace.Namespace{
		"room": {History: true, MaxAge: time.Hour, Presence: true, PresenceTTL: ttl},
	}
}

func start(t *testing.T, natsURL string) *app.App {
	t.Helper()
	cfg := app.Config{
		Listen:     "127.0.0.1:0",
		OpsListen:  "off",
		NATSListen: "127.0.0.1:0",
		DataDir:    t.TempDir(),
		NATSURL:    natsURL,
		LeaveGrace: 50 * time.Millisecond,
		Namespaces: namespaces(),
	}
	a := testkit.StartApp(t, cfg)
	return a
}

func wsURL(addr string) string { return fmt.Sprintf("ws://%s/socket", addr) }

func connect(t *testing.T, addr string) *phxnode.Puppet {
	t.Helper()
	p := phxnode.Start(t)
	if err := p.Connect(wsURL(addr), nil, nil); err != nil {
		t.Fatalf("connect: %v", err)
	}
	return p
}

func join(t *testing.T, p *phxnode.Puppet, topic, user, name string) {
	t.Helper()
	r := p.JoinOpts(topic, map[string]any{"user": user, "meta": map[string]any{"name": name}}, map[string]any{"presence": true})
	if r.Status != "ok" {
		t.Fatalf("join %s as %s: %s %s", topic, user, r.Status, r.Response)
	}
}

func keys(l []phxnode.Presence) string {
	var ks []string
	for _, p := range l {
		ks = append(ks, fmt.Sprintf("%s×%d", p.Key, len(p.Metas)))
	}
	sort.Strings(ks)
	return strings.Join(ks, " ")
}

// waitSync waits for a presence_sync on topic whose list is want.
func waitSync(t *testing.T, p *phxnode.Puppet, topic, want string, timeout time.Duration) []phxnode.Presence {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := "(none)"
	for {
		e, ok := p.Next(time.Until(deadline), phxnode.OnTopic("presence_sync", topic))
		if !ok {
			t.Fatalf("no presence_sync %q on %s within %v; last was %q\nbuffered:\n%v", want, topic, timeout, last, p.Buffered())
		}
		l := e.PresenceList()
		if last = keys(l); last == want {
			return l
		}
	}
}

func TestPresenceAcrossGateways(t *testing.T) {
	g1 := start(t, "")
	g2 := start(t, g1.NATSURL())

	alice := connect(t, g1.HTTPAddr())
	join(t, alice, "room:lobby", "alice", "Alice")
	waitSync(t, alice, "room:lobby", "alice×1", wait)

	// The wire format phoenix.js needs: presence_state pushed with the
	// channel's join_ref right after the join reply.
	st := alice.MustNext(wait, "presence_state", phxnode.IsMsg("room:lobby", "presence_state"))
	var jr any
	if err := st.Field("join_ref", &jr); err != nil || jr == nil || st.Ref != nil {
		t.Fatalf("presence_state must carry the join_ref and a null ref: %s", st)
	}

	bob := connect(t, g2.HTTPAddr())
	join(t, bob, "room:lobby", "bob", "Bob")
	// Bob's first presence_state (his gateway's first member: after the
	// sync with the other gateway) already has alice.
	first := bob.MustNext(wait, "presence_sync", phxnode.OnTopic("presence_sync", "room:lobby"))
	if k := keys(first.PresenceList()); k != "alice×1 bob×1" {
		t.Fatalf("bob's first sync: %s", k)
	}
	l := waitSync(t, alice, "room:lobby", "alice×1 bob×1", wait)
	for _, p := range l {
		m := p.Metas[0]
		if ref, _ := m["phx_ref"].(string); ref == "" || m["online_at"] == nil || strings.ToLower(fmt.Sprint(m["name"])) != p.Key {
			t.Fatalf("meta of %s: %v", p.Key, m)
		}
	}
	diff := alice.MustNext(wait, "presence_diff", phxnode.IsMsg("room:lobby", "presence_diff"))
	if err := diff.Field("join_ref", &jr); err != nil || jr != nil {
		t.Fatalf("presence_diff must have a null join_ref: %s", diff)
	}

	// A second tab of bob on gateway 1: one key, two metas, everywhere.
	bob2 := connect(t, g1.HTTPAddr())
	join(t, bob2, "room:lobby", "bob", "Bob")
	waitSync(t, bob2, "room:lobby", "alice×1 bob×2", wait)
	waitSync(t, bob, "room:lobby", "alice×1 bob×2", wait)
	waitSync(t, alice, "room:lobby", "alice×1 bob×2", wait)

	// Leaves cross the gateways.
	bob.Leave("room:lobby")
	waitSync(t, alice, "room:lobby", "alice×1 bob×1", wait)
	bob2.Disconnect(1000, "bye")
	waitSync(t, alice, "room:lobby", "alice×1", wait)

	// A rejoin gets a fresh presence_state.
	join(t, bob, "room:lobby", "bob", "Bob")
	waitSync(t, bob, "room:lobby", "alice×1 bob×1", wait)
	waitSync(t, alice, "room:lobby", "alice×1 bob×1", wait)

	// A gateway shut down gracefully says bye: its members leave at once
	// (well before the TTL).
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	g2.Shutdown(ctx)
	cancel()
	waitSync(t, alice, "room:lobby", "alice×1", wait)
	t.Logf("members of a gateway shut down left after %v", time.Since(t0))
}

var wsLine = regexp.MustCompile(`WebSocket ws://([0-9.:]+)/socket/websocket`)

// serveProcess runs a real `fabric serve` on natsURL and returns its client
// address and the process.
func serveProcess(t *testing.T, natsURL string) (string, *exec.Cmd) {
	t.Helper()
	dir := t.TempDir()
	bin := proctest.FabricBinary(t)
	cfg := filepath.Join(dir, "fabric.yaml")
	yaml := "namespaces:\n  room:\n    history: true\n    max_age: 1h\n    presence: true\n    presence_ttl: " + ttl.String() + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--ops-listen", "off",
		"--nats-url", natsURL, "--data-dir", filepath.Join(dir, "data"), "--log-level", "warn")
	cmd.Dir = dir
	cmd.Env = os.Environ()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := wsLine.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case addr := <-found:
		return addr, cmd
	case <-time.After(30 * time.Second):
		t.Fatalf("fabric serve did not start; stderr:\n%s", stderr.String())
	}
	return "", nil
}

func TestKilledGatewayMembersExpire(t *testing.T) {
	g1 := start(t, "")
	addr2, proc := serveProcess(t, g1.NATSURL())

	alice := connect(t, g1.HTTPAddr())
	join(t, alice, "room:kill", "alice", "Alice")
	waitSync(t, alice, "room:kill", "alice×1", wait)

	bob := connect(t, addr2)
	join(t, bob, "room:kill", "bob", "Bob")
	carol := connect(t, addr2)
	join(t, carol, "room:kill", "carol", "Carol")
	waitSync(t, bob, "room:kill", "alice×1 bob×1 carol×1", wait)
	waitSync(t, alice, "room:kill", "alice×1 bob×1 carol×1", wait)

	// Heartbeats keep gateway 2's members listed past the TTL.
	time.Sleep(2 * ttl)
	alice.Drain(phxnode.OnTopic("presence_sync", "room:kill"))

	// SIGKILL: no leaves, no bye. Its members leave alice's view once its
	// heartbeats are older than the TTL.
	t0 := time.Now()
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitSync(t, alice, "room:kill", "alice×1", ttl+3*time.Second)
	took := time.Since(t0)
	t.Logf("members of a killed gateway left after %v (TTL %v)", took, ttl)
	if took > ttl+time.Second {
		t.Fatalf("expiry took %v, TTL is %v", took, ttl)
	}
	if n := len(alice.Drain(phxnode.OnTopic("presence_sync", "room:kill"))); n != 0 {
		t.Logf("%d extra syncs", n)
	}
}

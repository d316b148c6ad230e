package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
)

// startNodeService runs a Node script with nats.js (clients/js's
// node_modules) against NATS at url, and returns once it printed "ready".
func startNodeService(t *testing.T, script, url string) {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", filepath.Join(root, script))
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(root, "clients/js/node_modules"), "NATS_URL="+url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("node: %v", err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	ready := make(chan bool, 1)
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- true
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case <-ready:
	case <-exited:
		t.Fatalf("%s exited before it was ready: %s", script, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s not ready: %s", script, stderr.String())
	}
}

// The Node example (nats.js) behind a real Fabric and the phoenix client:
// a member's join gets the guild's state, its pushes carry the role, a
// stranger is refused with the service's reason.
func TestJoinHookNodeExample(t *testing.T) {
	f := startAuthed(t, func(c *app.Config) {
		c.Namespaces = map[string]namespace.Namespace{"guild": {Joins: namespace.JoinsRequest, Pushes: namespace.PushesRequest}}
	})
	startNodeService(t, "examples/joinhook-node/joinhook.js", f.NATSURL())
	if _, err := f.nc.Subscribe("fabric_in.guild.>", func(m *nats.Msg) { _ = m.Respond([]byte(m.Header.Get("Fabric-Assigns"))) }); err != nil {
		t.Fatal(err)
	}
	f.nc.Flush()
	for _, tc := range []struct{ sub, status, resp string }{
		{"bob", "ok", `{"guild":"42","members":2}`},
		{"mallory", "error", `{"reason":"not a member"}`},
	} {
		p := phxnode.Start(t)
		tok := mint(t, auth.MintClaims{Subject: tc.sub, Channels: []string{"guild:*"}, Publish: []string{"guild:*"}})
		if err := p.Connect(f.socketURL(), map[string]any{"token": tok}, nil); err != nil {
			t.Fatal(err)
		}
		r := p.JoinOpts("guild:42", nil, map[string]any{"leaveOnError": true})
		if r.Status != tc.status || !sameJSON(t, r.Response, tc.resp) {
			t.Fatalf("%s: %s %s", tc.sub, r.Status, r.Response)
		}
		if tc.status == "ok" {
			if status, resp := p.Push("guild:42", "hi", nil); status != "ok" || !sameJSON(t, resp, `{"role":"member"}`) {
				t.Fatalf("assigns from the Node service: %s %s", status, resp)
			}
		}
	}
}

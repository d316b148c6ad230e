// Package e2e holds end-to-end tests: a whole Fabric (embedded NATS,
// gateway, HTTP listeners) started in-process, driven by the real phoenix
// npm client under Node, by raw Phoenix clients, and by nats.go publishers.
package e2e

import (
	"context"
	"fmt"
	"github.com/fabric-rt/fabric/internal/testkit"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

type fabric struct {
	*app.App
	t  *testing.T
	nc *nats.Conn // a service's connection, over TCP like `nats pub`
}

// startFabric runs a Fabric on random loopback ports with its own data dir.
func startFabric(t *testing.T, mutate func(*app.Config)) *fabric {
	t.Helper()
	cfg := app.Config{
		Listen:     "127.0.0.1:0",
		OpsListen:  "127.0.0.1:0",
		NATSListen: "127.0.0.1:0",
		DataDir:    t.TempDir(),
		LeaveGrace: 50 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	a := testkit.StartApp(t, cfg)
	nc := testkit.Connect(t, a.NATSURL())
	return &fabric{App: a, t: t, nc: nc}
}

func (f *fabric) wsURL(vsn string) string {
	return fmt.Sprintf("ws://%s/socket/websocket?vsn=%s", f.HTTPAddr(), vsn)
}

func (f *fabric) socketURL() string { return fmt.Sprintf("ws://%s/socket", f.HTTPAddr()) }

// publish sends a message the way a backend service would: plain nats.go,
// subject from the documented mapping, event in the Fabric-Event header.
func (f *fabric) publish(subject, event string, body []byte) {
	f.t.Helper()
	m := nats.NewMsg(subject)
	if event != "" {
		m.Header.Set("Fabric-Event", event)
	}
	m.Data = body
	if err := f.nc.PublishMsg(m); err != nil {
		f.t.Fatal(err)
	}
	if err := f.nc.Flush(); err != nil {
		f.t.Fatal(err)
	}
}

// interest counts the NATS server's subscriptions matching subject (every
// client's; tests use subjects only the gateway subscribes to: for the
// persistent room namespace, the live feed fabric_live.room.…, since the
// stream itself listens on fabric.room.>).
func (f *fabric) interest(subject string) int {
	return f.Embedded().NATS().GlobalAccount().Interest(subject)
}

// dial opens a raw Phoenix client.
func (f *fabric) dial(v phoenix.Version, opts phxclient.Options) *phxclient.Client {
	f.t.Helper()
	vsn := "2.0.0"
	if v == phoenix.V1 {
		vsn = "1.0.0"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := phxclient.Dial(ctx, f.wsURL(vsn), v, opts)
	if err != nil {
		f.t.Fatalf("dial: %v", err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

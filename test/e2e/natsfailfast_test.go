package e2e

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

// While the gateway's NATS connection is down, core publishes fail at once
// instead of waiting in nats.go's reconnect buffer: a client's push to an
// ephemeral channel is answered publish_failed, the HTTP publish API
// answers 503 + Retry-After, and neither message reaches NATS after the
// connection comes back (nothing is sent long after its sender was told it
// failed). Publishes after the reconnect go through.
func TestDisconnectedPublishesFailFast(t *testing.T) {
	f, proxy := startBehindProxy(t)
	sub, err := f.nc.SubscribeSync("fabric.chat.ff")
	if err != nil {
		t.Fatal(err)
	}
	f.nc.Flush()

	c := f.dial(phoenix.V2, phxclient.Options{})
	jr, _ := c.Join("chat:ff", nil)
	if s, _, err := c.WaitReply(jr, wait); s != "ok" || err != nil {
		t.Fatalf("join: %s %v", s, err)
	}
	push := func(event string) (string, string) {
		t.Helper()
		ref := c.NextRef()
		c.Send(phoenix.R(jr), phoenix.R(ref), "chat:ff", event, map[string]string{"e": event})
		s, resp, err := c.WaitReply(ref, wait)
		if err != nil {
			t.Fatalf("push %s: %v", event, err)
		}
		return s, string(resp)
	}
	publishAPI := func(event string) *http.Response {
		t.Helper()
		body := `{"topic":"chat:ff","event":"` + event + `","payload":"e30="}`
		resp, err := http.Post("http://"+f.HTTPAddr()+"/api/v1/publish", "application/json", bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	proxy.cut()
	eventually(t, 10*time.Second, "gateway noticed the drop", func() bool { return !natsUp(f.App) })
	if s, resp := push("while_down"); s != "error" || !strings.Contains(resp, "publish_failed") {
		t.Fatalf("push while disconnected: %s %s, want error publish_failed", s, resp)
	}
	if r := publishAPI("api_while_down"); r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("HTTP publish while disconnected: %d Retry-After %q, want 503 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}

	proxy.restore()
	// Connected is not enough: pushes are refused at once while the link
	// monitor still holds the bus away, until its next probe answers.
	eventually(t, 20*time.Second, "gateway reconnected", func() bool { return natsUp(f.App) })
	if s, resp := push("after"); s != "ok" {
		t.Fatalf("push after the reconnect: %s %s", s, resp)
	}
	// Anything buffered during the outage would have been flushed on the
	// reconnect, before this push: the first message must be this one.
	m, err := sub.NextMsg(wait)
	if err != nil {
		t.Fatal(err)
	}
	if ev := m.Header.Get("Fabric-Event"); ev != "after" {
		t.Fatalf("first message after the outage is %q, want \"after\" (a failed publish was sent later)", ev)
	}
}

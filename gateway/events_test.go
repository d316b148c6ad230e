package gateway_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport/ws"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

// stuckEvents is a broker whose lifecycle events for disconnects never
// return until released: what nc.Publish does while nats.go holds its
// connection lock across a dial attempt, only longer. (A test double
// only here: the fault tests in test/fault stop a real NATS.)
type stuckEvents struct {
	*memory.Broker
	release chan struct{}
}

func (b *stuckEvents) Emit(kind, _ string, _ []byte) {
	if kind == "disconnect" {
		<-b.release
	}
}

// A connection closing must not stop its event loop from serving the
// others while the bus is stuck: lifecycle events leave the loop through
// a queue.
func TestStuckEventsDoNotFreezeTheLoop(t *testing.T) {
	br := &stuckEvents{Broker: memory.New(), release: make(chan struct{})}
	g, err := gateway.New(gateway.Config{Broker: br, WS: ws.Config{Loops: 1}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	}()
	defer close(br.release) // first, so that a failed run can shut down
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + gateway.PathWebSocket + "?vsn=2.0.0"
	dial := func() *phxclient.Client {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := phxclient.Dial(ctx, url, phoenix.V2, phxclient.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a := dial()
	defer a.Close()
	heartbeat := func(what string) {
		t.Helper()
		ref := a.NextRef()
		if err := a.Send(phoenix.Null, phoenix.Ref{S: ref, Valid: true}, "phoenix", "heartbeat", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		// Generous: a frozen loop never answers.
		if _, _, err := a.WaitReply(ref, 3*time.Second); err != nil {
			t.Fatalf("heartbeat %s: %v", what, err)
		}
	}
	heartbeat("before")
	for i := range 3 {
		b := dial() // one loop: the same as a's
		b.Close()
		time.Sleep(50 * time.Millisecond) // let the loop see the close
		heartbeat("after close " + string(rune('1'+i)))
	}
}

package natsbroker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// A routed push waits as long as its caller's context says (the gateway
// gives it the namespace's push_timeout); without a deadline, 5 s from
// when the client sent it.
func TestRequestBoundedByCaller(t *testing.T) {
	e := setup(t)
	// A service that never answers.
	if _, err := e.pub.Subscribe("fabric_in.game.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := e.pub.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := e.b.Request(ctx, "game:1", "move", []byte(`{}`), broker.PushMeta{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent service: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("took %v: the caller's 200 ms deadline was not the bound", took)
	}
	// No deadline: the default counts from Sent, so a push that already
	// waited 4.9 s in its queue gets what is left of the 5 s.
	start = time.Now()
	_, err = e.b.Request(context.Background(), "game:1", "move", []byte(`{}`), broker.PushMeta{Sent: time.Now().Add(-4900 * time.Millisecond)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no deadline: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Fatalf("took %v: the default did not count from Sent", took)
	}
}

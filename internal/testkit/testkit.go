// Package testkit starts the real parts the end-to-end test packages share:
// a whole gateway in-process (embedded NATS included) and NATS connections,
// each torn down when its test ends, so no test package keeps a copy of the
// start-and-clean-up sequence.
package testkit

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/internal/app"
)

// StartApp starts a gateway with cfg and shuts it down (within 10 s) when
// t ends.
func StartApp(t testing.TB, cfg app.Config) *app.App {
	t.Helper()
	a, err := app.Start(cfg)
	if err != nil {
		t.Fatalf("start fabric: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Shutdown(ctx); err != nil {
			t.Logf("shutdown: %v", err) // the test's verdict is already in
		}
	})
	return a
}

// Connect connects to the NATS server at url and closes the connection
// when t ends.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect to NATS at %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

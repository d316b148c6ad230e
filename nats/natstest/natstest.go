// Package natstest gives tests a real in-process nats-server, so tests of
// NATS-facing code never need a mock.
package natstest

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/nats/natsembed"
)

// RunServer starts a JetStream-enabled server on a random loopback port,
// with its store in t.TempDir(), and shuts it down when the test ends.
func RunServer(t testing.TB) *natsembed.Server {
	t.Helper()
	s, err := natsembed.Start(natsembed.Config{
		Host:       "127.0.0.1",
		Port:       -1,
		JetStream:  true,
		StoreDir:   t.TempDir(),
		ServerName: "fabric-test",
	})
	if err != nil {
		t.Fatalf("natstest: start server: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// Connect opens an in-process connection to s, closed when the test ends.
func Connect(t testing.TB, s *natsembed.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect("", append([]nats.Option{s.ConnectOption()}, opts...)...)
	if err != nil {
		t.Fatalf("natstest: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

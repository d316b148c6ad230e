package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// RunNATSWSServer runs an embedded nats-server whose only listener is a
// plain (no TLS) WebSocket listener on host:port, until ctx is done. It is
// the baseline system of `fabric bench`: NATS's own WebSocket transport.
// A natsPort > 0 also opens the NATS client port on host (for the
// benchmark's publisher).
func RunNATSWSServer(ctx context.Context, host string, port, natsPort int, stdout io.Writer) error {
	opts := &server.Options{
		ServerName: "bench-nats-ws",
		DontListen: true,
		NoLog:      true,
		NoSigs:     true,
		MaxConn:    100000,
		Websocket: server.WebsocketOpts{
			Host:  host,
			Port:  port,
			NoTLS: true,
		},
	}
	if natsPort > 0 {
		opts.DontListen = false
		opts.Host = host
		opts.Port = natsPort
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats-ws-server: %w", err)
	}
	s.Start()
	defer s.Shutdown()
	deadline := time.Now().Add(10 * time.Second)
	for s.WebsocketURL() == "" || s.WebsocketURL() == fmt.Sprintf("ws://%s:0", host) {
		if time.Now().After(deadline) {
			return fmt.Errorf("nats-ws-server: websocket listener did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Fprintf(stdout, "nats-ws-server listening on %s\n", s.WebsocketURL())
	<-ctx.Done()
	return nil
}

package natsctl

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/nats/natsembed"
)

// While NATS is away a gateway keeps applying the list it read (fail
// static, not open), and an entry written while it was cut off reaches
// it once its connection is back: the watch resumes.
func TestListSurvivesAnOutage(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	cfg := natsembed.Config{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir(), ServerName: "outage"}
	srv, err := natsembed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	connect := func() *nats.Conn {
		nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	changed := make(chan struct{}, 10)
	gw, err := OpenRevocations(ctx, RevocationsConfig{Conn: connect(), OnChange: func() { changed <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	writer, err := OpenRevocations(ctx, RevocationsConfig{Conn: connect()})
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	until := time.Now().Add(time.Hour).UnixMilli()
	if err := writer.add(ctx, entry{Kind: kindJTI, JTI: "before", Until: until}); err != nil {
		t.Fatal(err)
	}
	<-changed

	srv.Shutdown()
	if got, _ := gw.Refusal("u", auth.JTIKey("before"), time.Now()); got != ReasonRevoked {
		t.Fatalf("with NATS away the known revocation reads %q", got)
	}
	if got, _ := gw.Refusal("u", auth.JTIKey("other"), time.Now()); got != "" {
		t.Fatalf("with NATS away an unrevoked token reads %q", got)
	}

	srv, err = natsembed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	// Written as soon as the writer is back; the gateway may still be
	// reconnecting.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := writer.add(ctx, entry{Kind: kindJTI, JTI: "during", Until: until})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writing after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-changed:
	case <-time.After(15 * time.Second):
		t.Fatal("the gateway's watch never delivered the entry written after the outage")
	}
	if got, _ := gw.Refusal("u", auth.JTIKey("during"), time.Now()); got != ReasonRevoked {
		t.Fatalf("entry written after the outage reads %q", got)
	}
}

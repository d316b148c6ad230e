package natsembed_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/nats/natsembed"
)

func start(t *testing.T, cfg natsembed.Config) *natsembed.Server {
	t.Helper()
	s, err := natsembed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

func roundTrip(t *testing.T, nc *nats.Conn) {
	t.Helper()
	sub, err := nc.SubscribeSync("fabric.room.lobby")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("fabric.room.lobby", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(m.Data) != "hi" {
		t.Fatalf("got %v, %v", m, err)
	}
}

func TestRandomPortTCP(t *testing.T) {
	s := start(t, natsembed.Config{Port: -1})
	url := s.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":4222") {
		t.Fatalf("ClientURL = %q", url)
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	roundTrip(t, nc)
	if !strings.HasPrefix(s.NATS().Name(), "fabric-") {
		t.Fatalf("default server name %q", s.NATS().Name())
	}
}

func TestDontListenInProcess(t *testing.T) {
	s := start(t, natsembed.Config{DontListen: true, ServerName: "gw-1"})
	if url := s.ClientURL(); url != "" {
		t.Fatalf("ClientURL = %q, want empty", url)
	}
	nc, err := nats.Connect("", s.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	roundTrip(t, nc)
	if s.NATS().Name() != "gw-1" {
		t.Fatalf("server name %q", s.NATS().Name())
	}
}

func TestJetStream(t *testing.T) {
	dir := t.TempDir()
	s := start(t, natsembed.Config{DontListen: true, JetStream: true, StoreDir: dir})
	nc, err := nats.Connect("", s.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("AccountInfo: %v", err)
	}
	if !s.NATS().JetStreamEnabled() {
		t.Fatal("JetStream not enabled")
	}
}

func TestJetStreamNeedsStoreDir(t *testing.T) {
	if _, err := natsembed.Start(natsembed.Config{DontListen: true, JetStream: true}); err == nil {
		t.Fatal("started JetStream without StoreDir")
	}
}

// A taken port must fail Start promptly with the reason, not after the
// ready timeout, and must not exit the process (nats-server's own logger
// would os.Exit on Fatalf).
func TestPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	begin := time.Now()
	_, err = natsembed.Start(natsembed.Config{Port: port})
	if err == nil {
		t.Fatal("Start on a taken port succeeded")
	}
	if !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Fatalf("error lacks the port: %v", err)
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("Start took %s to fail", d)
	}
}

func TestLogger(t *testing.T) {
	var buf syncBuffer
	s := start(t, natsembed.Config{
		DontListen: true,
		Logger:     slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	s.Shutdown()
	out := buf.String()
	if !strings.Contains(out, "level=INFO") || !strings.Contains(out, "component=nats-server") || !strings.Contains(out, "Server is ready") {
		t.Fatalf("logs:\n%s", out)
	}
}

func TestRestartSameStore(t *testing.T) {
	dir := t.TempDir()
	cfg := natsembed.Config{DontListen: true, JetStream: true, StoreDir: dir}
	s, err := natsembed.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	s = start(t, cfg)
	_ = s
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

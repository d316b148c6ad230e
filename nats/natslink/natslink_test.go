package natslink_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/nats/natsembed"
	"github.com/fabric-rt/fabric/nats/natslink"
	"github.com/fabric-rt/fabric/nats/natstest"
)

// silentProxy forwards one TCP connection both ways until silenced; then
// it swallows every byte, like a link whose packets are dropped (no RST,
// the connection stays open).
type silentProxy struct {
	ln     net.Listener
	silent atomic.Bool
}

func newSilentProxy(t *testing.T, target string) *silentProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &silentProxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			go p.pipe(c, s)
			go p.pipe(s, c)
		}
	}()
	return p
}

func (p *silentProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.silent.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				dst.Close()
			}
			return
		}
	}
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// A silent link is declared down after two unanswered probes, while
// nats.go (pinging every 2 minutes by default) still says CONNECTED; and
// up again once it answers.
func TestSilentLinkDetected(t *testing.T) {
	s := natstest.RunServer(t)
	p := newSilentProxy(t, strings.TrimPrefix(s.ClientURL(), "nats://"))
	nc, err := nats.Connect("nats://"+p.ln.Addr().String(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var changes atomic.Int32
	m, err := natslink.New(natslink.Config{Conn: nc, Interval: 100 * time.Millisecond, Timeout: 200 * time.Millisecond,
		OnChange: func(bool) { changes.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	var ups atomic.Int32
	m.Watch(func() { ups.Add(1) }, nil) // the broker's catch-up
	time.Sleep(500 * time.Millisecond)
	if err := m.Err(); err != nil {
		t.Fatalf("healthy link reported down: %v", err)
	}

	p.silent.Store(true)
	took := waitFor(t, "silent link declared down", 10*time.Second, func() bool { return m.Err() != nil })
	t.Logf("declared down %v after the link went silent", took)
	if !errors.Is(m.Err(), natslink.ErrDown) || m.DownSince().IsZero() {
		t.Fatalf("Err %v, DownSince %v", m.Err(), m.DownSince())
	}
	if nc.Status() != nats.CONNECTED {
		t.Logf("nats.go status %v (expected CONNECTED: its pings are minutes apart)", nc.Status())
	}

	p.silent.Store(false) // the swallowed bytes are lost, but the connection goes on
	// The link comes back either as the same connection answering again
	// or after nats.go redials; both must clear the state.
	nc.Flush() // nudge: not required, but a lost PING may otherwise wait for a redial
	waitFor(t, "link back up", 30*time.Second, func() bool {
		if m.Err() != nil {
			// A swallowed PONG leaves nats.go's flush waiters hanging;
			// a redial clears them.
			nc.ForceReconnect()
			m.Reconnected()
			time.Sleep(200 * time.Millisecond)
		}
		return m.Err() == nil
	})
	if m.Stats().Downs != 1 || changes.Load() < 2 {
		t.Fatalf("downs %d, changes %d: want 1 down and its return", m.Stats().Downs, changes.Load())
	}
	if ups.Load() != 1 {
		t.Fatalf("Watch's up called %d times, want once (the return)", ups.Load())
	}
}

// A stream that does not answer (here: missing, as for a stream without a
// leader) is down on its own while the link is up.
func TestStreamProbe(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	m, err := natslink.New(natslink.Config{Conn: nc, Interval: 100 * time.Millisecond, Timeout: 500 * time.Millisecond,
		Streams: []string{"NOPE"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	waitFor(t, "unanswered stream declared down", 10*time.Second, func() bool { return m.StreamErr("NOPE") != nil })
	if m.Err() != nil || m.StreamErr("OTHER") != nil {
		t.Fatalf("link %v, unwatched stream %v: want both up", m.Err(), m.StreamErr("OTHER"))
	}
}

// Disconnected marks the link down at once.
func TestDisconnectedIsImmediate(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	m, err := natslink.New(natslink.Config{Conn: nc, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	m.Disconnected(errors.New("EOF"))
	if err := m.Err(); err == nil || !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("Err after Disconnected: %v", err)
	}
	m.Reconnected()
	waitFor(t, "up after Reconnected", 5*time.Second, func() bool { return m.Err() == nil })
}

// A stream that answers again is reported through OnStreamUp (messages
// stored while it was out of reach never came live), in its Domain.
func TestStreamUpCallbackInDomain(t *testing.T) {
	s, err := natsembed.Start(natsembed.Config{Port: -1, JetStream: true, StoreDir: t.TempDir(), JetStreamDomain: "home"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc := natstest.Connect(t, s)
	var ups atomic.Int32
	var got atomic.Value
	m, err := natslink.New(natslink.Config{Conn: nc, Interval: 100 * time.Millisecond, Timeout: 500 * time.Millisecond,
		Streams: []string{"LATER"}, Domain: "home",
		OnStreamUp: func(name string) { got.Store(name); ups.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	var watched atomic.Value
	m.Watch(nil, func(name string) { watched.Store(name) })
	waitFor(t, "missing stream declared down", 10*time.Second, func() bool { return m.StreamErr("LATER") != nil })
	js, err := jetstream.NewWithDomain(nc, "home")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LATER", Subjects: []string{"later"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stream up again", 10*time.Second, func() bool { return m.StreamErr("LATER") == nil })
	waitFor(t, "OnStreamUp called", 5*time.Second, func() bool { return ups.Load() == 1 })
	if got.Load() != "LATER" || watched.Load() != "LATER" {
		t.Fatalf("OnStreamUp(%v), Watch's streamUp(%v), want LATER", got.Load(), watched.Load())
	}
}

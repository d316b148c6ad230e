package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
	"github.com/fabric-rt/fabric/nats/natstest"
)

// cutProxy forwards TCP to target and can cut every connection and refuse
// new ones, like a network partition between a gateway and NATS.
type cutProxy struct {
	ln     net.Listener
	target string
	down   atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if p.down.Load() {
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut() {
	p.down.Store(true)
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
}

func (p *cutProxy) restore() { p.down.Store(false) }

func (p *cutProxy) url() string { return "nats://" + p.ln.Addr().String() }

// startBehindProxy runs a Fabric whose NATS connection goes through a
// cutProxy to an in-process server, and a service connected directly.
func startBehindProxy(t *testing.T) (*fabric, *cutProxy) {
	t.Helper()
	ns := natstest.RunServer(t)
	proxy := newCutProxy(t, strings.TrimPrefix(ns.ClientURL(), "nats://"))
	a, err := app.Start(app.Config{Listen: "127.0.0.1:0", OpsListen: "off", NATSURL: proxy.url(), LeaveGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Shutdown(t.Context()) })
	svc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return &fabric{App: a, t: t, nc: svc}, proxy
}

// The gateway's NATS connection drops and comes back while messages flow:
// no client misses one (the live chain and the resync refetch them).
func TestNATSConnectionDropLosesNothing(t *testing.T) {
	f, proxy := startBehindProxy(t)

	c := f.dial(phoenix.V2, phxclient.Options{})
	joinPos(t, c, "room:flow", nil)

	var sent atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// JetStream publish: acknowledged once stored, so every
			// counted message is in history.
			f.jsPublish("fabric.room.flow", "m", fmt.Sprintf(`{"i":%d}`, i))
			sent.Store(int64(i + 1))
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(200 * time.Millisecond)
	proxy.cut()
	eventually(t, 10*time.Second, "gateway noticed the drop", func() bool { return !natsUp(f.App) })
	time.Sleep(time.Second)
	proxy.restore()
	eventually(t, 20*time.Second, "gateway reconnected", func() bool { return natsUp(f.App) })
	time.Sleep(300 * time.Millisecond)
	close(stop)
	<-done
	n := int(sent.Load())
	is, _ := nextN(t, c, "room:flow", "m", n)
	for k, i := range is {
		if i != k {
			t.Fatalf("message %d is i=%d of %d sent: gap, duplicate or reorder", k, i, n)
		}
	}
	if extra, err := c.NextMatch(300*time.Millisecond, func(m phxclient.Msg) bool { return m.Event == "m" }); err == nil {
		t.Fatalf("extra delivery after the last: %+v", extra)
	}
}

// natsUp is the gateway's own view of its NATS link (what /readyz and the
// fail-fast paths read): nats.go reporting CONNECTED is not enough, since
// the link counts as up again only once a probe round trip answered after
// the reconnect, and until then pushes and publishes fail at once.
func natsUp(a *app.App) bool { return a.NATSConnected() && a.NATSErr() == nil }

// Package fault holds fault tests with real processes: gateways are
// `fabric serve` processes, killed with SIGKILL or drained with SIGTERM,
// behind a small load balancer, while the real phoenix client keeps its
// channels and a publisher keeps publishing.
package fault

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
	"github.com/fabric-rt/fabric/internal/testkit/proctest"
	"github.com/fabric-rt/fabric/nats/natstest"
)

const wait = 20 * time.Second

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type gateway struct {
	addr, ops string
	cmd       *exec.Cmd
	done      chan error
}

// startGateway runs `fabric serve` against natsURL (plus extra flags) and
// waits until ready.
func startGateway(t *testing.T, natsURL string, extra ...string) *gateway {
	t.Helper()
	g := &gateway{addr: freeAddr(t), ops: freeAddr(t), done: make(chan error, 1)}
	args := append([]string{"serve", "--listen", g.addr, "--ops-listen", g.ops,
		"--nats-url", natsURL, "--data-dir", t.TempDir(), "--log-level", "warn",
		"--drain-window", "2s", "--shutdown-timeout", "8s"}, extra...)
	g.cmd = exec.Command(proctest.FabricBinary(t), args...)
	g.cmd.Env = proctest.Env()
	g.cmd.Stdout, g.cmd.Stderr = io.Discard, os.Stderr
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.done <- g.cmd.Wait() }()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.done
	})
	deadline := time.Now().Add(wait)
	for {
		resp, err := http.Get("http://" + g.ops + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return g
			}
		}
		select {
		case err := <-g.done:
			g.done <- err
			t.Fatalf("gateway %s exited: %v", g.addr, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway %s not ready", g.addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// balancer forwards each new TCP connection to the first backend that
// accepts it, like a load balancer whose health check removed a dead node.
type balancer struct {
	ln       net.Listener
	backends []string
}

func newBalancer(t *testing.T, backends ...string) *balancer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{ln: ln, backends: backends}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	return b
}

func (b *balancer) serve(c net.Conn) {
	for _, addr := range b.backends {
		u, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		go func() { io.Copy(u, c); u.Close() }()
		io.Copy(c, u)
		c.Close()
		return
	}
	c.Close()
}

// publishing keeps publishing counted messages to subj with JetStream
// acknowledgements until stop; it returns how many were acked.
func publishing(t *testing.T, nc *nats.Conn, subj string, stop <-chan struct{}) <-chan int {
	return publishingCounted(nc, subj, 5*time.Second, new(pubStats), stop)
}

// received collects the "i" counters a puppet got on topic until it has n.
func received(t *testing.T, p *phxnode.Puppet, topic string, n int) []int {
	t.Helper()
	var is []int
	deadline := time.Now().Add(60 * time.Second)
	for len(is) < n && time.Now().Before(deadline) {
		e, ok := p.Next(time.Second, phxnode.IsMsg(topic, "m"))
		if !ok {
			continue
		}
		var m struct{ I int }
		json.Unmarshal(e.Payload, &m)
		is = append(is, m.I)
	}
	return is
}

func checkContiguous(t *testing.T, who string, is []int, n int) {
	t.Helper()
	if len(is) != n {
		t.Fatalf("%s got %d of %d messages", who, len(is), n)
	}
	for k, i := range is {
		if i != k {
			t.Fatalf("%s: message %d is i=%d: gap, duplicate or reorder", who, k, i)
		}
	}
}

func runFailover(t *testing.T, closeCode int, kill func(g *gateway)) {
	ns := natstest.RunServer(t)
	a := startGateway(t, ns.ClientURL())
	b := startGateway(t, ns.ClientURL())
	lb := newBalancer(t, a.addr, b.addr)
	url := "ws://" + lb.ln.Addr().String() + "/socket"

	const clients = 3
	var ps []*phxnode.Puppet
	for i := 0; i < clients; i++ {
		p := phxnode.Start(t)
		if err := p.Connect(url, nil, map[string]any{"reconnectAfterMs": 100, "rejoinAfterMs": 100}); err != nil {
			t.Fatal(err)
		}
		if res := p.JoinOpts("room:failover", nil, map[string]any{"resumable": true}); res.Status != "ok" {
			t.Fatalf("join: %+v", res)
		}
		ps = append(ps, p)
	}
	svc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	stop := make(chan struct{})
	count := publishing(t, svc, "fabric.room.failover", stop)
	time.Sleep(300 * time.Millisecond)
	kill(a) // every client is on a: the balancer prefers it
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	n := <-count
	if n < 100 {
		t.Fatalf("only %d messages published", n)
	}
	for i, p := range ps {
		c := p.MustNext(wait, "close", phxnode.IsEv("close"))
		if c.Code != closeCode {
			t.Fatalf("client %d: close code %d, want %d", i, c.Code, closeCode)
		}
		checkContiguous(t, fmt.Sprintf("client %d", i), received(t, p, "room:failover", n), n)
		if gaps := p.Drain(phxnode.IsEv("gap")); len(gaps) > 0 {
			t.Fatalf("client %d told of a gap: %v", i, gaps)
		}
	}
}

// A gateway killed with SIGKILL: its clients reconnect through the balancer
// to the other gateway and resume there with nothing lost.
func TestGatewaySIGKILL(t *testing.T) {
	runFailover(t, 1006, func(g *gateway) {
		g.cmd.Process.Signal(syscall.SIGKILL)
		<-g.done
		g.done <- nil
	})
}

// SIGTERM: the gateway drains (clients closed with 1012 over the window),
// exits 0, and its clients resume on the other gateway with nothing lost.
func TestGatewaySIGTERMDrain(t *testing.T) {
	runFailover(t, 1012, func(g *gateway) {
		start := time.Now()
		g.cmd.Process.Signal(syscall.SIGTERM)
		var err error
		select {
		case err = <-g.done:
		case <-time.After(15 * time.Second):
			t.Fatal("gateway did not exit within its shutdown deadline")
		}
		g.done <- err
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
		t.Logf("drained and exited 0 in %v", time.Since(start).Round(time.Millisecond))
	})
}

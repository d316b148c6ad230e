package fault

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
	"github.com/fabric-rt/fabric/internal/testkit/proctest"
	"github.com/fabric-rt/fabric/nats/wire"
)

// natsNode is one `fabric nats` process of the test cluster.
type natsNode struct {
	name, client string // client: host:port
	cmd          *exec.Cmd
	done         chan error
	log          string
}

// startNATSCluster runs three `fabric nats` processes on 127.0.0.2-4 in
// cluster "t", each routing to all three, and waits for a JetStream meta
// leader.
func startNATSCluster(t *testing.T) []*natsNode {
	t.Helper()
	hosts := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	var nodes []*natsNode
	var routeAddrs, routes []string
	for i, h := range hosts {
		nodes = append(nodes, &natsNode{name: fmt.Sprintf("n%d", i), client: proctest.FreeAddrOn(t, h), done: make(chan error, 1)})
		ra := proctest.FreeAddrOn(t, h)
		routeAddrs = append(routeAddrs, ra)
		routes = append(routes, "nats-route://"+ra)
	}
	for i, n := range nodes {
		n.log = filepath.Join(t.TempDir(), n.name+".log")
		f, err := os.Create(n.log)
		if err != nil {
			t.Fatal(err)
		}
		n.cmd = exec.Command(proctest.FabricBinary(t), "nats", "--name", n.name, "--listen", n.client,
			"--cluster-name", "t", "--cluster-listen", routeAddrs[i], "--routes", strings.Join(routes, ","),
			"--store-dir", t.TempDir(), "--log-level", "warn")
		n.cmd.Env = proctest.Env()
		n.cmd.Stdout, n.cmd.Stderr = f, f
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		go func() { n.done <- n.cmd.Wait() }()
		t.Cleanup(func() {
			n.cmd.Process.Signal(syscall.SIGCONT)
			n.cmd.Process.Kill()
			select {
			case <-n.done:
			case <-time.After(10 * time.Second):
				t.Errorf("nats node %s did not exit", n.name)
			}
			if t.Failed() {
				if b, err := os.ReadFile(n.log); err == nil && len(b) > 0 {
					if len(b) > 4000 {
						b = b[len(b)-4000:]
					}
					t.Logf("nats node %s log tail:\n%s", n.name, b)
				}
			}
		})
	}
	// A JetStream meta leader: account info succeeds.
	nc, err := nats.Connect(natsURLs(nodes), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	deadline := time.Now().Add(30 * time.Second)
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || attempt > 300 {
			t.Fatalf("no JetStream meta leader: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A leader is not enough for an R3 stream: every peer must have
	// reported to it, and a fresh cluster's first leader may still hand
	// over. Place (and remove) a probe R3 file stream, three times in a
	// row over about a second.
	for attempt, ok := 0, 0; ok < 3; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe.x"},
			Replicas: 3, Storage: jetstream.FileStorage})
		if err == nil {
			err = js.DeleteStream(ctx, "PROBE")
		}
		cancel()
		if err == nil {
			ok++
			time.Sleep(300 * time.Millisecond)
			continue
		}
		ok = 0
		if time.Now().After(deadline) || attempt > 100 {
			t.Fatalf("cannot place an R3 stream: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nodes
}

func natsURLs(nodes []*natsNode) string {
	var us []string
	for _, n := range nodes {
		us = append(us, "nats://"+n.client)
	}
	return strings.Join(us, ",")
}

// startGatewayR3 runs `fabric serve` with room:* history at 3 replicas.
func startGatewayR3(t *testing.T, natsURL string) *gateway {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "fabric.yaml")
	if err := os.WriteFile(cfg, []byte("namespaces:\n  room:\n    history: true\n    replicas: 3\n    max_age: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startGateway(t, natsURL, "--config", cfg)
}

// pubStats counts a publisher's acknowledged messages and failed attempts.
type pubStats struct{ acked, failed atomic.Int64 }

// publishingCounted is publishing with a short per-attempt timeout and a
// count of failed attempts; a failed attempt is retried with the same
// message id, so a late-stored copy is deduplicated.
func publishingCounted(nc *nats.Conn, subj string, timeout time.Duration, st *pubStats, stop <-chan struct{}) <-chan int {
	js, _ := jetstream.New(nc)
	n := make(chan int, 1)
	go func() {
		i := 0
		defer func() { n <- i }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			m := nats.NewMsg(subj)
			m.Header.Set("Fabric-Event", "m")
			m.Data = fmt.Appendf(nil, `{"i":%d}`, i)
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			_, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(fmt.Sprint(subj, "-", i)))
			cancel()
			if err != nil {
				st.failed.Add(1)
				time.Sleep(20 * time.Millisecond)
				continue
			}
			i++
			st.acked.Store(int64(i))
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return n
}

type natsFixture struct {
	nodes   []*natsNode
	clients []*phxnode.Puppet
	svc     *nats.Conn
}

// natsSetup: the cluster, two gateways (each listing every node, its own
// node first), and one resumable phoenix client on each, joined to room:x.
func natsSetup(t *testing.T) *natsFixture {
	f := &natsFixture{nodes: startNATSCluster(t)}
	var gws []*gateway
	for i := range 2 {
		var us []string
		for k := range f.nodes {
			us = append(us, "nats://"+f.nodes[(i+k)%len(f.nodes)].client)
		}
		gws = append(gws, startGatewayR3(t, strings.Join(us, ",")))
	}
	for _, g := range gws {
		p := phxnode.Start(t)
		if err := p.Connect("ws://"+g.addr+"/socket", nil, map[string]any{"reconnectAfterMs": 100, "rejoinAfterMs": 100}); err != nil {
			t.Fatal(err)
		}
		if res := p.JoinOpts("room:x", nil, map[string]any{"resumable": true}); res.Status != "ok" {
			t.Fatalf("join: %+v", res)
		}
		f.clients = append(f.clients, p)
	}
	svc, err := nats.Connect(natsURLs(f.nodes), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	f.svc = svc
	return f
}

// check: no client saw its socket close, and each has all n messages in order.
// recoverAndCheck keeps publishing until 200 more messages are acknowledged
// (bounded by within), lets the last ones settle, stops the publisher and
// checks every client got every acknowledged message.
func (f *natsFixture) recoverAndCheck(t *testing.T, st *pubStats, count <-chan int, stop chan struct{}, within, settle time.Duration, after string) {
	t.Helper()
	before := st.acked.Load()
	deadline := time.Now().Add(within)
	for st.acked.Load() < before+200 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(settle)
	close(stop)
	n := <-count
	t.Logf("%d acknowledged, %d failed attempts", n, st.failed.Load())
	if int64(n) < before+200 {
		t.Fatalf("publishing did not recover after %s: %d acked, %d before", after, n, before)
	}
	f.check(t, n)
}

func (f *natsFixture) check(t *testing.T, n int) {
	t.Helper()
	for i, p := range f.clients {
		checkContiguous(t, fmt.Sprintf("client %d", i), received(t, p, "room:x", n), n)
		if cs := p.Drain(phxnode.IsEv("close")); len(cs) > 0 {
			t.Fatalf("client %d socket closed: %+v", i, cs[0])
		}
		if gaps := p.Drain(phxnode.IsEv("gap")); len(gaps) > 0 {
			t.Fatalf("client %d told of a gap: %v", i, gaps)
		}
	}
}

// One NATS node (the stream leader) killed with SIGKILL: the gateways fail
// over to the other nodes, their clients' sockets stay open, and every
// acknowledged message reaches every client once, in order.
func TestNATSNodeSIGKILL(t *testing.T) {
	f := natsSetup(t)
	js, _ := jetstream.New(f.svc)
	stop := make(chan struct{})
	var st pubStats
	count := publishingCounted(f.svc, "fabric.room.x", 5*time.Second, &st, stop)
	time.Sleep(500 * time.Millisecond)

	victim, leader := f.nodes[0], "unknown"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	s, err := js.Stream(ctx, wire.StreamName("room"))
	if err == nil {
		info, err := s.Info(ctx)
		if err == nil && info.Cluster != nil {
			leader = info.Cluster.Leader
			for _, n := range f.nodes {
				if n.name == info.Cluster.Leader {
					victim = n
				}
			}
		}
	}
	cancel()
	t.Logf("stream leader %s; killing %s (acked so far: %d)", leader, victim.name, st.acked.Load())
	victim.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case err := <-victim.done:
		victim.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("killed node did not exit")
	}
	f.recoverAndCheck(t, &st, count, stop, 15*time.Second, 500*time.Millisecond, "the kill")
}

// All of NATS unreachable (every node SIGSTOPped) for several seconds:
// clients stay connected, publishes fail meanwhile (and none is falsely
// acknowledged), and after SIGCONT every client has every acked message.
func TestNATSUnreachable(t *testing.T) {
	f := natsSetup(t)
	stop := make(chan struct{})
	var st pubStats
	count := publishingCounted(f.svc, "fabric.room.x", time.Second, &st, stop)
	time.Sleep(500 * time.Millisecond)

	for _, n := range f.nodes {
		n.cmd.Process.Signal(syscall.SIGSTOP)
	}
	t.Cleanup(func() { // in case the test stops before SIGCONT
		for _, n := range f.nodes {
			n.cmd.Process.Signal(syscall.SIGCONT)
		}
	})
	time.Sleep(500 * time.Millisecond) // in-flight publishes settle
	ackedStopped := st.acked.Load()
	failedStopped := st.failed.Load()
	time.Sleep(6 * time.Second)
	ackedOutage := st.acked.Load() - ackedStopped
	failedOutage := st.failed.Load() - failedStopped
	for _, n := range f.nodes {
		n.cmd.Process.Signal(syscall.SIGCONT)
	}
	t.Logf("during the outage: %d acked, %d failed attempts", ackedOutage, failedOutage)
	if ackedOutage != 0 {
		t.Errorf("%d publishes acknowledged while every NATS node was stopped", ackedOutage)
	}
	if failedOutage == 0 {
		t.Errorf("no publish failed during the outage")
	}

	f.recoverAndCheck(t, &st, count, stop, 20*time.Second, 300*time.Millisecond, "SIGCONT")
}

// Package cluster tests Fabric against a 3-node JetStream cluster: three
// embedded nats-servers joined by routes on loopback, three gateways each
// connected (over TCP, like `fabric serve --nats-url`) to its own node
// first, R3 history, and the loss of one node.
package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/fabric-rt/fabric/internal/testkit"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/clients/go/phx"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/nats/natsembed"
	"github.com/fabric-rt/fabric/nats/wire"
)

const wait = 15 * time.Second

func logger() *slog.Logger {
	if os.Getenv("FABRIC_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// freePorts reserves n loopback ports and releases them: a JetStream
// cluster node must be given its routes up front (nats-server refuses a
// clustered JetStream node with none), so the ports must be known.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// startCluster starts n JetStream nodes in cluster "t", every node routing
// to every node (itself included, which nats-server ignores).
func startCluster(t *testing.T, n int) []*natsembed.Server {
	t.Helper()
	var nodes []*natsembed.Server
	var routes []string
	ports := freePorts(t, n)
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	for i := range n {
		s, err := natsembed.Start(natsembed.Config{
			ServerName:    fmt.Sprintf("n%d", i),
			Port:          -1,
			JetStream:     true,
			StoreDir:      t.TempDir(),
			ClusterName:   "t",
			ClusterListen: fmt.Sprintf("127.0.0.1:%d", ports[i]),
			Routes:        routes,
			Logger:        logger(),
		})
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		t.Cleanup(s.Shutdown)
		if want := routes[i]; s.ClusterURL() != want {
			t.Fatalf("node %d routes at %q, want %q", i, s.ClusterURL(), want)
		}
		nodes = append(nodes, s)
	}
	eventually(t, 30*time.Second, "full route mesh and a JetStream meta leader", func() bool {
		leaders := 0
		for _, s := range nodes {
			if remotes(s.NATS()) != n-1 || !s.NATS().JetStreamIsCurrent() {
				return false
			}
			if s.NATS().JetStreamIsLeader() {
				leaders++
			}
		}
		return leaders == 1
	})
	return nodes
}

// remotes counts the distinct servers a node has routes to (one server can
// have several pooled route connections).
func remotes(s *server.Server) int {
	rz, err := s.Routez(nil)
	if err != nil {
		return 0
	}
	ids := map[string]bool{}
	for _, r := range rz.Routes {
		ids[r.RemoteID] = true
	}
	return len(ids)
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// urlsFrom lists every node's client URL, node i first.
func urlsFrom(nodes []*natsembed.Server, i int) string {
	var us []string
	for k := range nodes {
		us = append(us, nodes[(i+k)%len(nodes)].ClientURL())
	}
	return strings.Join(us, ",")
}

func startGateway(t *testing.T, natsURL string) *app.App {
	t.Helper()
	a := testkit.StartApp(t, app.Config{
		Listen:     "127.0.0.1:0",
		OpsListen:  "off",
		NATSURL:    natsURL,
		LeaveGrace: 50 * time.Millisecond,
		Namespaces: map[string]namespace.Namespace{"room": {History: true, Replicas: 3}},
		Logger:     logger(),
	})
	return a
}

// listener is a Go client joined to room:x, recording what it receives.
type listener struct {
	mu   sync.Mutex
	msgs []phx.Message
}

func (l *listener) add(m phx.Message) {
	l.mu.Lock()
	l.msgs = append(l.msgs, m)
	l.mu.Unlock()
}

// listen connects a client to gateway a and joins room:x.
func listen(t *testing.T, a *app.App) *listener {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	sock, err := phx.Dial(ctx, fmt.Sprintf("ws://%s/socket", a.HTTPAddr()), phx.Options{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { sock.Close() })
	l := &listener{}
	ch, err := sock.Join(ctx, "room:x", nil, phx.On("msg", l.add))
	if err != nil {
		t.Fatalf("join room:x: %v", err)
	}
	if p, ok := ch.Position(); !ok || p.Epoch == "" {
		t.Fatalf("join reply without a position: %s", ch.Response())
	}
	return l
}

// publish stores a message with a JetStream publish, retrying (same
// Nats-Msg-Id, so at most one copy is stored) through a leader election.
func publish(t *testing.T, js jetstream.JetStream, id string, i int) uint64 {
	t.Helper()
	m := nats.NewMsg("fabric.room.x")
	m.Header.Set("Fabric-Event", "msg")
	m.Data = fmt.Appendf(nil, `{"i":%d}`, i)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ack, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return ack.Sequence
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish %s: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// expect waits until message i has arrived and checks its offset.
func expect(t *testing.T, l *listener, who string, i int, seq uint64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		l.mu.Lock()
		for _, m := range l.msgs {
			var p struct{ I int }
			if json.Unmarshal(m.Payload, &p) == nil && p.I == i {
				l.mu.Unlock()
				if m.Offset != seq {
					t.Fatalf("%s: message %d at offset %d, want %d", who, i, m.Offset, seq)
				}
				return
			}
		}
		l.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("%s: message %d did not arrive", who, i)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestThreeNodeClusterSurvivesNodeLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node JetStream cluster")
	}
	nodes := startCluster(t, 3)

	gws := make([]*app.App, 3)
	clients := make([]*listener, 3)
	for i := range nodes {
		gws[i] = startGateway(t, urlsFrom(nodes, i))
		clients[i] = listen(t, gws[i])
	}

	// The service connects to all three nodes too.
	nc, err := nats.Connect(urlsFrom(nodes, 0), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := js.Stream(ctx, wire.StreamName("room"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream is not R3 over the cluster: %+v %+v", info.Config, info.Cluster)
	}

	seq1 := publish(t, js, "m1", 1)
	for i, c := range clients {
		expect(t, c, fmt.Sprintf("client of gateway %d", i), 1, seq1, wait)
	}

	// Abruptly stop the stream's leader: the worst node to lose (the
	// stream must elect a new leader before it takes writes again).
	victim := -1
	for i, s := range nodes {
		if s.NATS().Name() == info.Cluster.Leader {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatalf("stream leader %q is not one of ours", info.Cluster.Leader)
	}
	t.Logf("shutting down node %d (%s), the stream leader", victim, info.Cluster.Leader)
	nodes[victim].Shutdown()

	seq2 := publish(t, js, "m2", 2)
	if seq2 != seq1+1 {
		t.Fatalf("second message at %d, want %d", seq2, seq1+1)
	}
	// Stored: readable from the surviving replicas.
	gctx, gcancel := context.WithTimeout(context.Background(), wait)
	defer gcancel()
	var stored *jetstream.RawStreamMsg
	for stored == nil {
		stored, err = st.GetMsg(gctx, seq2)
		if err != nil {
			if gctx.Err() != nil {
				t.Fatalf("message %d not readable after node loss: %v", seq2, err)
			}
			stored = nil
			time.Sleep(100 * time.Millisecond)
		}
	}
	if string(stored.Data) != `{"i":2}` {
		t.Fatalf("stored %q", stored.Data)
	}
	for i, c := range clients {
		if i == victim {
			continue
		}
		expect(t, c, fmt.Sprintf("client of gateway %d", i), 2, seq2, wait)
	}
	// The gateway whose node died reconnects to another node and catches
	// its channels up from the stream.
	expect(t, clients[victim], fmt.Sprintf("client of gateway %d (its node down)", victim), 2, seq2, 30*time.Second)
	eventually(t, wait, "the orphaned gateway to reconnect", gws[victim].NATSConnected)
}

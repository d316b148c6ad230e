// Package embedcluster_test runs three real `fabric serve` processes whose
// embedded NATS servers form one cluster (--cluster-name, --cluster-listen,
// --routes), with R3 history, and SIGKILLs one of them.
package embedcluster_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
	"github.com/fabric-rt/fabric/internal/testkit/proctest"
	"github.com/fabric-rt/fabric/nats/wire"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		// Fail the run if a test left a goroutine behind (as goleak.VerifyTestMain).
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	proctest.RemoveBinaries()
	os.Exit(code)
}

// node is one `fabric serve` process: a gateway with its embedded NATS
// server, a member of the cluster.
type node struct {
	name                       string
	listen, ops, nats, cluster string // host:port
	cmd                        *exec.Cmd
	done                       chan error
	log                        string
}

func (n *node) ready() bool {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + n.ops + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (n *node) kill(t *testing.T) {
	t.Helper()
	n.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case err := <-n.done:
		n.done <- err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not exit after SIGKILL", n.name)
	}
}

// startCluster starts three `fabric serve` processes on 127.0.0.2-4, each
// with its own ports and data directory, all in cluster "fab" routing to
// all three, and the room namespace at three replicas; it returns once
// every one is ready (its streams exist).
func startCluster(t *testing.T) []*node {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "fabric.yaml")
	if err := os.WriteFile(cfg, []byte("namespaces:\n  room:\n    history: true\n    replicas: 3\n    max_age: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var nodes []*node
	var routes []string
	for i, h := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		n := &node{name: fmt.Sprintf("n%d", i), listen: proctest.FreeAddrOn(t, h), ops: proctest.FreeAddrOn(t, h),
			nats: proctest.FreeAddrOn(t, h), cluster: proctest.FreeAddrOn(t, h), done: make(chan error, 1)}
		nodes = append(nodes, n)
		routes = append(routes, "nats-route://"+n.cluster)
	}
	for _, n := range nodes {
		dir := t.TempDir()
		n.log = filepath.Join(dir, "fabric.log")
		f, err := os.Create(n.log)
		if err != nil {
			t.Fatal(err)
		}
		n.cmd = exec.Command(proctest.FabricBinary(t), "serve", "--config", cfg,
			"--listen", n.listen, "--ops-listen", n.ops, "--nats-listen", n.nats,
			"--data-dir", filepath.Join(dir, "data"), "--nats-name", n.name,
			"--cluster-name", "fab", "--cluster-listen", n.cluster, "--routes", strings.Join(routes, ","),
			"--log-level", "warn", "--drain-window", "0s", "--shutdown-timeout", "5s")
		n.cmd.Env = proctest.Env()
		n.cmd.Stdout, n.cmd.Stderr = f, f
		if err := n.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		go func() { n.done <- n.cmd.Wait() }()
		t.Cleanup(func() {
			n.cmd.Process.Kill()
			select {
			case <-n.done:
			case <-time.After(10 * time.Second):
				t.Errorf("%s did not exit", n.name)
			}
			if t.Failed() {
				if b, err := os.ReadFile(n.log); err == nil && len(b) > 0 {
					if len(b) > 4000 {
						b = b[len(b)-4000:]
					}
					t.Logf("%s log tail:\n%s", n.name, b)
				}
			}
		})
	}
	// A fresh cluster elects its first meta leader after Raft's randomized
	// election timeout (several seconds), then every node creates or reads
	// the R3 stream: about 8 s on an idle 2-core machine, three or four
	// times that when it is busy (CI runs packages in parallel).
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range nodes {
		for !n.ready() {
			select {
			case err := <-n.done:
				n.done <- err
				t.Fatalf("%s exited before it was ready: %v", n.name, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready within 60 s", n.name)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nodes
}

// joinReply is a persistent channel's join answer.
type joinReply struct {
	Epoch     string          `json:"epoch"`
	Offset    json.RawMessage `json:"offset"`
	Recovered *bool           `json:"recovered"`
	Reason    string          `json:"reason"`
}

// sent is one acknowledged message: its counter and offset.
type sent struct {
	i      int
	offset uint64
}

// collect reads topic's "m" messages from p until it has every one of
// want (bounded), and checks they came in order, at their offsets, with
// nothing in between and nothing twice.
func collect(t *testing.T, p *phxnode.Puppet, who, topic string, want []sent, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for k := 0; k < len(want); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s: got %d of %d messages within %v", who, topic, k, len(want), within)
		}
		e, ok := p.Next(time.Second, phxnode.IsMsg(topic, "m"))
		if !ok {
			continue
		}
		var v struct{ I int }
		json.Unmarshal(e.Payload, &v)
		off, _ := strconv.ParseUint(e.RefString(), 10, 64)
		if v.I != want[k].i || off != want[k].offset {
			t.Fatalf("%s: %s: message %d is i=%d at offset %d, want i=%d at offset %d: gap, duplicate or reorder",
				who, topic, k, v.I, off, want[k].i, want[k].offset)
		}
		k++
	}
}

func TestEmbeddedClusterSurvivesSIGKILL(t *testing.T) {
	testStart := time.Now()
	nodes := startCluster(t)
	t.Logf("three embedded nodes ready in %v", time.Since(testStart).Round(time.Millisecond))

	// A phoenix client on every node, joined to room:x.
	var clients []*phxnode.Puppet
	var epoch string
	for _, n := range nodes {
		p := phxnode.Start(t)
		if err := p.Connect("ws://"+n.listen+"/socket", nil, map[string]any{"reconnectAfterMs": 100, "rejoinAfterMs": 100}); err != nil {
			t.Fatal(err)
		}
		res := p.JoinOpts("room:x", nil, map[string]any{"resumable": true})
		var r joinReply
		if res.Status != "ok" || json.Unmarshal(res.Response, &r) != nil || r.Epoch == "" {
			t.Fatalf("join on %s: %+v", n.name, res)
		}
		if epoch != "" && r.Epoch != epoch {
			t.Fatalf("%s answered epoch %q, another node %q: not one stream", n.name, r.Epoch, epoch)
		}
		epoch = r.Epoch
		clients = append(clients, p)
	}

	// The stream is one R3 stream over the three nodes.
	nc, err := nats.Connect("nats://"+nodes[0].nats+",nats://"+nodes[1].nats+",nats://"+nodes[2].nats,
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, wire.StreamName("room"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Name != "fab" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream is not R3 over the cluster: replicas %d, cluster %+v", info.Config.Replicas, info.Cluster)
	}

	// Phase 1: JetStream publishes on node 0's NATS port, to room:x (every
	// node has a member) and room:y (nobody has joined it anywhere, so a
	// later resume must read the stream, not a gateway's memory).
	sentX, sentY := []sent{}, []sent{}
	jsPublish := func(topicSubj string, i int) uint64 {
		t.Helper()
		m := nats.NewMsg(topicSubj)
		m.Header.Set("Fabric-Event", "m")
		m.Data = fmt.Appendf(nil, `{"i":%d}`, i)
		deadline := time.Now().Add(20 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ack, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(fmt.Sprintf("%s-%d", topicSubj, i)))
			cancel()
			if err == nil {
				return ack.Sequence
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish %s %d: %v", topicSubj, i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	const perPhase = 20
	for i := range perPhase {
		sentX = append(sentX, sent{i, jsPublish("fabric.room.x", i)})
		sentY = append(sentY, sent{i, jsPublish("fabric.room.y", i)})
	}
	for k, p := range clients {
		collect(t, p, "client on "+nodes[k].name, "room:x", sentX, 15*time.Second)
	}

	// SIGKILL the stream leader: the stream must elect another leader from
	// the two surviving replicas before it takes writes again. (A fresh
	// bound: phase 1 may have used up most of the first one on a loaded
	// machine.)
	victim := -1
	for deadline := time.Now().Add(10 * time.Second); victim < 0; {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		info, err = st.Info(ctx)
		cancel()
		for k, n := range nodes {
			if err == nil && info.Cluster != nil && n.name == info.Cluster.Leader {
				victim = k
			}
		}
		if victim < 0 && time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("stream info: %v", err)
			}
			t.Fatalf("stream leader %+v is not one of ours", info.Cluster)
		}
		if victim < 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	killedAt := time.Now()
	nodes[victim].kill(t)
	s1, s2 := nodes[(victim+1)%3], nodes[(victim+2)%3]
	t.Logf("SIGKILLed %s, the stream leader; survivors %s and %s", nodes[victim].name, s1.name, s2.name)
	if e, ok := clients[victim].Next(15*time.Second, phxnode.IsEv("close")); !ok {
		t.Errorf("the killed node's client saw no close")
	} else {
		t.Logf("the killed node's client saw close %d", e.Code)
	}

	// Phase 2: through a survivor's HTTP publish API, each message retried
	// with its idempotency key while the stream has no leader (503).
	hc := &http.Client{Timeout: 10 * time.Second}
	var unavailable int
	var firstOK time.Time // the first publish acknowledged after the kill
	httpPublish := func(topic string, i int) uint64 {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"topic": topic, "event": "m",
			"payload":         base64.StdEncoding.EncodeToString(fmt.Appendf(nil, `{"i":%d}`, i)),
			"idempotency_key": fmt.Sprintf("%s-%d", topic, i)})
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := hc.Post("http://"+s1.listen+"/api/v1/publish", "application/json", bytes.NewReader(body))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					var r struct{ Epoch, Offset string }
					json.Unmarshal(b, &r)
					off, err := strconv.ParseUint(r.Offset, 10, 64)
					if err != nil || r.Epoch != epoch {
						t.Fatalf("publish %s %d: 200 %s (epoch was %q)", topic, i, b, epoch)
					}
					if firstOK.IsZero() {
						firstOK = time.Now()
					}
					return off
				}
				if resp.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("publish %s %d: %d %s", topic, i, resp.StatusCode, b)
				}
				unavailable++
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish %s %d: not acknowledged within 30 s of trying (last: %v)", topic, i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for i := perPhase; i < 2*perPhase; i++ {
		sentX = append(sentX, sent{i, httpPublish("room:x", i)})
		sentY = append(sentY, sent{i, httpPublish("room:y", i)})
	}
	t.Logf("first publish acknowledged %v after the kill, all of phase 2 stored %v after it (%d answers 503 meanwhile)",
		firstOK.Sub(killedAt).Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond), unavailable)
	for k, p := range clients {
		if k == victim {
			continue
		}
		collect(t, p, "client on "+nodes[k].name, "room:x", sentX[perPhase:], 15*time.Second)
		for _, ev := range []string{"close", "error", "chan_error", "gap"} {
			if es := p.Drain(phxnode.IsEv(ev)); len(es) > 0 {
				t.Errorf("client on %s: %d %q event(s), first %s", nodes[k].name, len(es), ev, es[0])
			}
		}
	}

	// A new client on the other survivor resumes both channels from offset
	// 0: recovered, and every message of both phases, in order.
	p := phxnode.Start(t)
	if err := p.Connect("ws://"+s2.listen+"/socket", nil, nil); err != nil {
		t.Fatal(err)
	}
	leaveOnError := map[string]any{"leaveOnError": true}
	for _, c := range []struct {
		topic string
		want  []sent
	}{{"room:y", sentY}, {"room:x", sentX}} {
		// A survivor may still answer "unavailable" while it confirms the
		// new stream leader (its check failed once in CI under load): a
		// client joins again, as phoenix.js does after rejoinAfterMs (here
		// explicitly: the refused channel is left, not retried by phoenix.js).
		res := p.JoinOpts(c.topic, map[string]any{"epoch": epoch, "offset": "0"}, leaveOnError)
		for deadline := time.Now().Add(15 * time.Second); res.Status == "error" &&
			strings.Contains(string(res.Response), `"unavailable"`) && time.Now().Before(deadline); {
			t.Logf("resume %s on %s answered %s; joining again", c.topic, s2.name, res.Response)
			time.Sleep(500 * time.Millisecond)
			res = p.JoinOpts(c.topic, map[string]any{"epoch": epoch, "offset": "0"}, leaveOnError)
		}
		var r joinReply
		if res.Status != "ok" || json.Unmarshal(res.Response, &r) != nil || r.Recovered == nil || !*r.Recovered {
			t.Fatalf("resume %s on %s from offset 0: %s %s", c.topic, s2.name, res.Status, res.Response)
		}
		collect(t, p, "resuming client on "+s2.name, c.topic, c.want, 15*time.Second)
	}
	// Anything after the last expected message would be a duplicate or a
	// message never published: give it a moment to show up.
	time.Sleep(500 * time.Millisecond)
	if extra := p.Drain(phxnode.IsMsg("", "m")); len(extra) > 0 {
		t.Fatalf("resuming client: %d extra message(s), first %s", len(extra), extra[0])
	}
	t.Logf("whole test %v", time.Since(testStart).Round(time.Millisecond))
}

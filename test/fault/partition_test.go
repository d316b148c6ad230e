package fault

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/internal/testkit/phxnode"
	"github.com/fabric-rt/fabric/nats/wire"
	"github.com/fabric-rt/fabric/publisher"
)

// attempt is one publish attempt as the publisher saw it.
type attempt struct {
	start, end time.Time
	i          int    // the message's counter (retries keep it)
	ok         bool   // acknowledged
	offset     uint64 // when ok
	clear      bool   // a failure the caller can act on: 503 + Retry-After, ErrUnavailable
	what       string // the failure
}

// pubLog records every attempt of one publisher ("h": HTTP API, "l": the
// publisher library); safe for concurrent use.
type pubLog struct {
	name     string
	mu       sync.Mutex
	attempts []attempt
	acked    []uint64 // acked[i] is message i's offset
}

func (l *pubLog) add(a attempt) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.attempts = append(l.attempts, a)
	if a.ok {
		l.acked = append(l.acked, a.offset)
	}
}

func (l *pubLog) nAcked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// run publishes {"p": name, "i": i} to room:x with idempotency key
// "<name>-<i>" until stop, retrying a failed message (same key, so a copy
// stored late is not stored twice) and moving on once it is acknowledged.
func (l *pubLog) run(stop <-chan struct{}, done *sync.WaitGroup, send func(i int, payload []byte, key string) attempt) {
	done.Add(1)
	go func() {
		defer done.Done()
		for i := 0; ; {
			select {
			case <-stop:
				return
			default:
			}
			a := send(i, fmt.Appendf(nil, `{"p":%q,"i":%d}`, l.name, i), fmt.Sprintf("%s-%d", l.name, i))
			a.i = i
			l.add(a)
			if a.ok {
				i++
				time.Sleep(5 * time.Millisecond)
			} else {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
}

// httpPublish posts to a gateway's /api/v1/publish in the JSON mapping.
func httpPublish(hc *http.Client, gatewayAddr string) func(int, []byte, string) attempt {
	return func(_ int, payload []byte, key string) attempt {
		body, _ := json.Marshal(map[string]any{"topic": "room:x", "event": "m",
			"payload": base64.StdEncoding.EncodeToString(payload), "idempotency_key": key})
		a := attempt{start: time.Now()}
		resp, err := hc.Post("http://"+gatewayAddr+"/api/v1/publish", "application/json", bytes.NewReader(body))
		a.end = time.Now()
		if err != nil {
			a.what = err.Error()
			return a
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == http.StatusOK {
			var r struct{ Offset string }
			if err := json.Unmarshal(b, &r); err != nil {
				a.what = fmt.Sprintf("200 with body %q", b)
				return a
			}
			off, err := strconv.ParseUint(r.Offset, 10, 64)
			if err != nil || off == 0 {
				a.what = fmt.Sprintf("200 with body %q", b)
				return a
			}
			a.ok, a.offset = true, off
			return a
		}
		a.what = fmt.Sprintf("%d %s", resp.StatusCode, b)
		a.clear = resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != ""
		return a
	}
}

// libPublish publishes with the publisher library.
func libPublish(p *publisher.Publisher) func(int, []byte, string) attempt {
	return func(_ int, payload []byte, key string) attempt {
		a := attempt{start: time.Now()}
		// Well over the library's own 2 s bound: a hang shows as "unclear".
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := p.Publish(ctx, "room:x", "m", payload, publisher.WithIdempotencyKey(key))
		cancel()
		a.end = time.Now()
		if err != nil {
			a.what = err.Error()
			a.clear = errors.Is(err, publisher.ErrUnavailable)
			return a
		}
		a.ok, a.offset = res.Offset > 0, res.Offset
		if !a.ok {
			a.what = "success without an offset"
		}
		return a
	}
}

func readyStatus(g *gateway) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + g.ops + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// delivery is one message a client received.
type delivery struct {
	p      string
	i      int
	offset uint64
}

// All of NATS unreachable for 10 s, as a partition that refuses: every
// NATS connection of both gateways and of the publisher goes through a
// proxy that closes them all and closes every new one at once, then
// heals. Phoenix clients on both gateways keep their sockets and channels;
// both publishers (the HTTP API, alternating between the gateways, and the
// publisher library) get a clear error for every publish meanwhile, never
// a success; after healing every client has every acknowledged message
// exactly once, in order, and every acknowledged message is in the stream
// at its offset.
func TestNATSPartitionRefused(t *testing.T) {
	const outage = 10 * time.Second
	testStart := time.Now()
	nodes := startNATSCluster(t)
	var targets []string
	for _, n := range nodes {
		targets = append(targets, n.client)
	}
	gwProxies := []*natsProxy{newNATSProxy(t, "gateway a", targets), newNATSProxy(t, "gateway b", targets)}
	pubProxy := newNATSProxy(t, "publisher", targets)
	proxies := append(slices.Clone(gwProxies), pubProxy)

	var gws []*gateway
	var clients []*phxnode.Puppet
	cfg := filepath.Join(t.TempDir(), "fabric.yaml")
	if err := os.WriteFile(cfg, []byte("namespaces:\n  room:\n    history: true\n    replicas: 3\n    max_age: 1h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, px := range gwProxies {
		// Errors only: the warnings would be one line per refused publish.
		g := startGateway(t, px.urls(i), "--config", cfg, "--log-level", "error")
		gws = append(gws, g)
		p := phxnode.Start(t)
		if err := p.Connect("ws://"+g.addr+"/socket", nil, map[string]any{"reconnectAfterMs": 100, "rejoinAfterMs": 100}); err != nil {
			t.Fatal(err)
		}
		if res := p.JoinOpts("room:x", nil, map[string]any{"resumable": true}); res.Status != "ok" {
			t.Fatalf("join: %+v", res)
		}
		clients = append(clients, p)
	}

	// The publisher library on its own connection, through its own proxy.
	pnc, err := nats.Connect(pubProxy.urls(2), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.IgnoreDiscoveredServers())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pnc.Close)
	lib, err := publisher.New(pnc, publisher.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lib.Close)

	// A third publisher is not partitioned (another service that still
	// reaches NATS): what it stores meanwhile, the gateways only get by
	// resyncing their channels after they reconnect.
	dnc, err := nats.Connect(natsURLs(nodes), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dnc.Close)
	djs, _ := jetstream.New(dnc)

	hc := &http.Client{Timeout: 10 * time.Second}
	logs := []*pubLog{{name: "h"}, {name: "l"}, {name: "d"}}
	stop := make(chan struct{})
	var pubs sync.WaitGroup
	stopPublishers := sync.OnceFunc(func() { close(stop); pubs.Wait() })
	t.Cleanup(stopPublishers)
	hpubs := []func(int, []byte, string) attempt{httpPublish(hc, gws[0].addr), httpPublish(hc, gws[1].addr)}
	logs[0].run(stop, &pubs, func(i int, payload []byte, key string) attempt {
		return hpubs[i%2](i, payload, key) // alternate gateways by message
	})
	logs[1].run(stop, &pubs, libPublish(lib))
	logs[2].run(stop, &pubs, func(_ int, payload []byte, key string) attempt {
		m := nats.NewMsg("fabric.room.x")
		m.Header.Set("Fabric-Event", "m")
		m.Data = payload
		a := attempt{start: time.Now()}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ack, err := djs.PublishMsg(ctx, m, jetstream.WithMsgID(key))
		cancel()
		a.end, a.clear = time.Now(), true
		if err != nil {
			a.what = err.Error()
			return a
		}
		a.ok, a.offset = true, ack.Sequence
		return a
	})

	waitAcked := func(what string, within time.Duration, want []int) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			ok := true
			for k, w := range want {
				ok = ok && logs[k].nAcked() >= w
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: acknowledged %d (http) and %d (library), want %v", what, logs[0].nAcked(), logs[1].nAcked(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitAcked("before the partition", 15*time.Second, []int{50, 50})

	// Partition.
	for _, px := range proxies {
		n := px.cut()
		t.Logf("cut %s: %d connection(s) closed", px.name, n)
	}
	cutDone := time.Now()
	dAtCut := logs[2].nAcked()
	for _, g := range gws {
		deadline := time.Now().Add(5 * time.Second)
		for readyStatus(g) != http.StatusServiceUnavailable {
			if time.Now().After(deadline) {
				t.Fatalf("gateway %s still ready during the partition", g.addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(time.Until(cutDone.Add(outage)))
	for _, g := range gws {
		// Still cut off: no way around the proxies (see natsProxy).
		if st := readyStatus(g); st != http.StatusServiceUnavailable {
			t.Fatalf("gateway %s: readyz %d at the end of the partition", g.addr, st)
		}
	}
	dDuring := logs[2].nAcked() - dAtCut
	healStart := time.Now()
	for _, px := range proxies {
		px.heal()
	}
	for _, px := range proxies {
		t.Logf("%s proxy refused %d connection attempts during the partition", px.name, px.refused.Load())
	}
	for _, g := range gws {
		deadline := time.Now().Add(20 * time.Second)
		for readyStatus(g) != http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatalf("gateway %s not ready again 20 s after healing", g.addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("gateway %s ready again %v after healing", g.addr, time.Since(healStart).Round(time.Millisecond))
	}
	waitAcked("after healing", 20*time.Second, []int{logs[0].nAcked() + 50, logs[1].nAcked() + 50})
	stopPublishers()
	t.Logf("the unpartitioned publisher stored %d messages during the partition", dDuring)
	if dDuring == 0 {
		t.Errorf("the unpartitioned publisher stored nothing during the partition: the resync went untested")
	}

	// Every attempt during the partition failed, clearly; no failure at
	// any time was unclear (a hang, a 500, a bare connection error).
	for _, l := range logs[:2] {
		var during, failedDuring, unclear int
		var firstOK time.Time
		var worst time.Duration
		for _, a := range l.attempts {
			if !a.ok && !a.clear {
				unclear++
				if unclear <= 3 {
					t.Errorf("publisher %s: message %d: unclear failure after %v: %s", l.name, a.i, a.end.Sub(a.start), a.what)
				}
			}
			if a.start.After(cutDone) && a.end.Before(healStart) {
				during++
				if a.ok {
					t.Errorf("publisher %s: message %d acknowledged (offset %d) during the partition", l.name, a.i, a.offset)
				} else {
					failedDuring++
					worst = max(worst, a.end.Sub(a.start))
				}
			}
			if a.ok && a.start.After(healStart) && firstOK.IsZero() {
				firstOK = a.end
			}
		}
		if failedDuring == 0 {
			t.Errorf("publisher %s: no attempt failed during the partition", l.name)
		}
		t.Logf("publisher %s: %d acknowledged, %d attempts during the partition (%d failed, slowest failure %v), %d unclear; first success %v after healing",
			l.name, len(l.acked), during, failedDuring, worst.Round(time.Millisecond), unclear, firstOK.Sub(healStart).Round(time.Millisecond))
	}

	// Every acknowledged message is stored at its offset, once.
	checkStored(t, nodes, logs)

	// Every client: every acknowledged message once, in order; its socket
	// never closed and its channel never errored.
	for k, p := range clients {
		who := fmt.Sprintf("client %d", k)
		ds := receivedAll(t, p, logs)
		checkDeliveries(t, who, ds, logs)
		for _, ev := range []string{"close", "error", "chan_error", "chan_close", "gap"} {
			if es := p.Drain(phxnode.IsEv(ev)); len(es) > 0 {
				t.Errorf("%s: %d %q event(s), first %s", who, len(es), ev, es[0])
			}
		}
	}
	t.Logf("whole test %v", time.Since(testStart).Round(time.Millisecond))
}

// checkStored reads the stream straight from the nodes (not through a
// proxy) and checks every acknowledged message is at its offset and no
// message is stored twice.
func checkStored(t *testing.T, nodes []*natsNode, logs []*pubLog) {
	t.Helper()
	nc, err := nats.Connect(natsURLs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Right after healing, the server this connection landed on may not
	// have found the JetStream meta leader yet and answers "no
	// responders": ask again until the deadline (bounded by ctx).
	var (
		st   jetstream.Stream
		info *jetstream.StreamInfo
		cons jetstream.Consumer
	)
	for {
		var err error
		if st, err = js.Stream(ctx, wire.StreamName("room")); err == nil {
			if info, err = st.Info(ctx); err == nil {
				cons, err = st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"fabric.room.x"}})
			}
		}
		if err == nil {
			break
		}
		if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) || ctx.Err() != nil {
			t.Fatal(err)
		}
		t.Logf("reading the stream: %v (again)", err)
		time.Sleep(200 * time.Millisecond)
	}
	type key struct {
		p string
		i int
	}
	stored := map[key]uint64{}
	for last := uint64(0); last < info.State.LastSeq; {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(2*time.Second))
		if errors.Is(err, nats.ErrNoResponders) && ctx.Err() == nil {
			// The same as above: the consumer's server is not ready yet.
			t.Logf("fetching: %v (again)", err)
			time.Sleep(200 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			last = md.Sequence.Stream
			var v struct {
				P string
				I int
			}
			if err := json.Unmarshal(m.Data(), &v); err != nil {
				t.Fatalf("stored message %d: %q", last, m.Data())
			}
			if prev, dup := stored[key{v.P, v.I}]; dup {
				t.Errorf("message %s-%d stored twice, at %d and %d", v.P, v.I, prev, last)
			}
			stored[key{v.P, v.I}] = last
		}
		if n == 0 {
			if ctx.Err() != nil {
				t.Fatalf("read the stream up to %d of %d", last, info.State.LastSeq)
			}
			if errors.Is(batch.Error(), nats.ErrNoResponders) {
				// The no-responders case again, reported by the batch
				// rather than by Fetch (seen in CI): ask again.
				t.Logf("fetching: %v (again)", batch.Error())
				time.Sleep(200 * time.Millisecond)
				continue
			}
			if batch.Error() != nil && !errors.Is(batch.Error(), nats.ErrTimeout) {
				t.Fatal(batch.Error())
			}
		}
	}
	for _, l := range logs {
		for i, off := range l.acked {
			if got, ok := stored[key{l.name, i}]; !ok || got != off {
				t.Errorf("publisher %s: message %d acknowledged at offset %d, stored at %d (found: %v)", l.name, i, off, got, ok)
			}
		}
	}
	t.Logf("stream holds %d messages of room:x; last offset %d", len(stored), info.State.LastSeq)
}

// receivedAll reads a client's room:x messages until every acknowledged
// message of every publisher has arrived (bounded).
func receivedAll(t *testing.T, p *phxnode.Puppet, logs []*pubLog) []delivery {
	t.Helper()
	want := map[string]uint64{} // publisher → offset of its last acked message
	for _, l := range logs {
		if len(l.acked) > 0 {
			want[l.name] = l.acked[len(l.acked)-1]
		}
	}
	var ds []delivery
	deadline := time.Now().Add(30 * time.Second)
	for len(want) > 0 && time.Now().Before(deadline) {
		e, ok := p.Next(time.Second, phxnode.IsMsg("room:x", "m"))
		if !ok {
			continue
		}
		var v struct {
			P string
			I int
		}
		json.Unmarshal(e.Payload, &v)
		off, _ := strconv.ParseUint(e.RefString(), 10, 64)
		ds = append(ds, delivery{v.P, v.I, off})
		if w, ok := want[v.P]; ok && off >= w {
			delete(want, v.P)
		}
	}
	return ds
}

// checkDeliveries: offsets strictly increase (in order, no duplicate), and
// each publisher's acknowledged messages all arrived at their offsets.
// Anything else delivered must come after a publisher's last acknowledged
// message (a publish whose ack was lost, stored at most once).
func checkDeliveries(t *testing.T, who string, ds []delivery, logs []*pubLog) {
	t.Helper()
	next := map[string]int{}
	var last uint64
	for k, d := range ds {
		if d.offset <= last {
			t.Fatalf("%s: delivery %d (%s-%d) at offset %d after offset %d: duplicate or reorder", who, k, d.p, d.i, d.offset, last)
		}
		last = d.offset
		var l *pubLog
		for _, x := range logs {
			if x.name == d.p {
				l = x
			}
		}
		if l == nil {
			t.Fatalf("%s: delivery %d from unknown publisher %q", who, k, d.p)
		}
		if d.i >= len(l.acked) {
			continue // not acknowledged; checkStored made sure it is stored once
		}
		if d.i != next[d.p] || d.offset != l.acked[d.i] {
			t.Fatalf("%s: delivery %d is %s-%d at offset %d (acknowledged at %d), want %s-%d next: gap, duplicate or reorder",
				who, k, d.p, d.i, d.offset, l.acked[d.i], d.p, next[d.p])
		}
		next[d.p]++
	}
	for _, l := range logs {
		if next[l.name] != len(l.acked) {
			t.Fatalf("%s: got %d of publisher %s's %d acknowledged messages", who, next[l.name], l.name, len(l.acked))
		}
	}
	t.Logf("%s: %d deliveries, all acknowledged messages in order", who, len(ds))
}

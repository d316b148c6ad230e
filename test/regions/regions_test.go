// Package regions_test runs two regions joined by a NATS leaf node, all
// real processes: the hub region is a `fabric nats` node (JetStream domain
// "hub", accounts, a leaf-node listener) with a `fabric serve` gateway
// connected to it; the leaf region is one `fabric serve` whose embedded
// server is a leaf node of the hub, reached through a TCP proxy that can
// cut the link. Clients (the Go phx client) sit in both regions on the
// same channels of a persistent namespace (room, homed in the hub: history
// domain "hub") and an ephemeral one (chat). See docs/regions.md.
package regions_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fabric-rt/fabric/clients/go/phx"
	"github.com/fabric-rt/fabric/internal/testkit/proctest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	proctest.RemoveBinaries()
	os.Exit(code)
}

// proc is one fabric process, its output in a log file shown on failure.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan error
	log  string
}

func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan error, 1), log: filepath.Join(t.TempDir(), name+".log")}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(proctest.FabricBinary(t), args...)
	p.cmd.Env = append(proctest.Env(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not exit", p.name)
		}
		if t.Failed() {
			if b, err := os.ReadFile(p.log); err == nil && len(b) > 0 {
				if len(b) > 6000 {
					b = b[len(b)-6000:]
				}
				t.Logf("%s log tail:\n%s", p.name, b)
			}
		}
	})
	return p
}

// waitHTTP polls url until it answers 200, failing if p exits first.
func (p *proc) waitHTTP(t *testing.T, url string, within time.Duration) {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(within)
	for {
		if resp, err := c.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited before it was ready: %v", p.name, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %s", p.name, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// linkProxy forwards the leaf node's connection to the hub's leaf-node
// port. cut closes it and refuses new ones (a partition that refuses, as
// in test/fault); heal lets them through. The hub does not advertise its
// leaf-node URLs (no_advertise), so the leaf cannot reconnect around it.
type linkProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newLinkProxy(t *testing.T, host, target string) *linkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *linkProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.DialTimeout("tcp", p.target, 2*time.Second)
		p.mu.Lock()
		if err != nil || p.down {
			p.mu.Unlock()
			c.Close()
			if u != nil {
				u.Close()
			}
			continue
		}
		p.conns[c], p.conns[u] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go func() { defer p.wg.Done(); io.Copy(u, c); u.Close(); c.Close() }()
		go func() { defer p.wg.Done(); io.Copy(c, u); u.Close(); c.Close() }()
	}
}

func (p *linkProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *linkProxy) heal() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// leafCounters sums the hub's leaf-node connections' message counters
// (nats-server /leafz): out is hub → leaf, in is leaf → hub.
func leafCounters(t *testing.T, monitor string) (in, out int64, n int) {
	t.Helper()
	resp, err := http.Get("http://" + monitor + "/leafz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lz struct {
		Leafs []struct {
			InMsgs  int64 `json:"in_msgs"`
			OutMsgs int64 `json:"out_msgs"`
		} `json:"leafs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&lz); err != nil {
		t.Fatal(err)
	}
	for _, l := range lz.Leafs {
		in += l.InMsgs
		out += l.OutMsgs
	}
	return in, out, len(lz.Leafs)
}

// client is one phx socket with both channels joined; it records every
// "m" message it receives per topic, in arrival order.
type client struct {
	name string
	sock *phx.Socket
	chs  map[string]*phx.Channel
	mu   sync.Mutex
	got  map[string][]rec
}

type rec struct {
	key    string
	offset uint64
}

func newClient(t *testing.T, name, gatewayAddr string, topics ...string) *client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c := &client{name: name, chs: map[string]*phx.Channel{}, got: map[string][]rec{}}
	sock, err := phx.Dial(ctx, "ws://"+gatewayAddr+"/socket", phx.Options{})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	c.sock = sock
	t.Cleanup(func() { sock.Close() })
	for _, topic := range topics {
		if reason, err := c.join(topic); err != nil || reason != "" {
			t.Fatalf("%s: join %s: %q %v", name, topic, reason, err)
		}
	}
	return c
}

// join joins topic recording its messages; reason is a refusal's.
func (c *client) join(topic string, opts ...phx.ChannelOption) (reason string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	ch, err := c.sock.Join(ctx, topic, nil, append(opts, phx.On("m", func(m phx.Message) {
		var body struct{ K string }
		if json.Unmarshal(m.Payload, &body) != nil {
			return
		}
		c.mu.Lock()
		c.got[topic] = append(c.got[topic], rec{body.K, m.Offset})
		c.mu.Unlock()
	}))...)
	var re *phx.ReplyError
	if errors.As(err, &re) {
		var r struct{ Reason string }
		json.Unmarshal(re.Reply.Response, &r)
		return r.Reason, nil
	}
	if err != nil {
		return "", err
	}
	c.chs[topic] = ch
	return "", nil
}

func (c *client) records(topic string) []rec {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got[topic])
}

// push sends {"K": key} as "m" and returns the reply's reason ("" when
// acknowledged).
func (c *client) push(topic, key string, timeout time.Duration) (reason string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err = c.chs[topic].Push(ctx, "m", map[string]string{"K": key})
	var re *phx.ReplyError
	if errors.As(err, &re) {
		var r struct{ Reason string }
		json.Unmarshal(re.Reply.Response, &r)
		return r.Reason, nil
	}
	return "", err
}

func (c *client) mustPush(t *testing.T, topic, key string) {
	t.Helper()
	if reason, err := c.push(topic, key, 10*time.Second); reason != "" || err != nil {
		t.Fatalf("%s: push %s %s: %q %v", c.name, topic, key, reason, err)
	}
}

// receivedOnce waits until every client has every key on topic, and
// fails when one has a key twice.
func receivedOnce(t *testing.T, clients []*client, topic string, keys []string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, c := range clients {
		for {
			seen := map[string]int{}
			for _, r := range c.records(topic) {
				seen[r.key]++
			}
			var missing []string
			for _, k := range keys {
				switch seen[k] {
				case 0:
					missing = append(missing, k)
				case 1:
				default:
					t.Fatalf("%s got %s on %s %d times", c.name, k, topic, seen[k])
				}
			}
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is missing %d of %d messages on %s: %v", c.name, len(missing), len(keys), topic, missing)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// warm pushes from c until every client got one of its warm-up messages:
// subscription interest crosses a leaf-node link asynchronously, and an
// ephemeral message published before it arrived is (rightly) not sent.
func warm(t *testing.T, c *client, clients []*client, topic string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		key := fmt.Sprintf("warm-%s-%d", c.name, i)
		c.mustPush(t, topic, key)
		ok := true
		for _, o := range clients {
			if !slices.ContainsFunc(o.records(topic), func(r rec) bool { return strings.HasPrefix(r.key, "warm-"+c.name+"-") }) {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("warm-up messages from %s never reached every client on %s", c.name, topic)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func keys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// sameHistory checks that every client saw topic's messages in one
// order, offsets strictly increasing, each offset once: the one stream's
// order, in both regions.
func sameHistory(t *testing.T, clients []*client, topic string) {
	t.Helper()
	var want []uint64
	for i, c := range clients {
		var offs []uint64
		for _, r := range c.records(topic) {
			if n := len(offs); n > 0 && r.offset <= offs[n-1] {
				t.Fatalf("%s: offset %d (%s) after %d on %s: out of order or twice", c.name, r.offset, r.key, offs[n-1], topic)
			}
			offs = append(offs, r.offset)
		}
		if i == 0 {
			want = offs
			continue
		}
		// Clients joined at slightly different times: compare from the
		// first offset both have.
		a, b := want, offs
		for len(a) > 0 && len(b) > 0 && a[0] != b[0] {
			if a[0] < b[0] {
				a = a[1:]
			} else {
				b = b[1:]
			}
		}
		if !slices.Equal(a, b) {
			t.Fatalf("%s saw %s in another order than %s:\n%v\n%v", c.name, topic, clients[0].name, offs, want)
		}
	}
}

// TestTwoRegionsOverLeafNode: messages cross regions once per message,
// and a 10 s cut of the leaf link keeps the leaf region's ephemeral
// traffic local, fails its persistent publishes clearly, and after
// healing every acknowledged message reaches every client once, in order.
func TestTwoRegionsOverLeafNode(t *testing.T) {
	dir := t.TempDir()
	hubHost, proxyHost, leafHost := "127.0.0.5", "127.0.0.6", "127.0.0.7"
	hubClient, hubLeaf, hubMon := proctest.FreeAddrOn(t, hubHost), proctest.FreeAddrOn(t, hubHost), proctest.FreeAddrOn(t, hubHost)

	// The hub: accounts as NATS recommends for leaf nodes (the leaf logs
	// in as a user of the application account; the system account is
	// not shared), JetStream domain "hub", leaf-node URLs not advertised.
	hubConf := filepath.Join(dir, "hub.conf")
	if err := os.WriteFile(hubConf, []byte(`
accounts {
  SYS: { users: [ {user: sys, password: syspw} ] }
  APP: { jetstream: enabled, users: [ {user: gateway, password: gwpw}, {user: leaf, password: leafpw} ] }
}
system_account: SYS
http: "`+hubMon+`"
leafnodes { no_advertise: true }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	nsConf := filepath.Join(dir, "fabric.yaml")
	if err := os.WriteFile(nsConf, []byte("namespaces:\n  room:\n    history: true\n    max_age: 1h\n  chat:\n    history: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hub := start(t, "hub-nats", nil, "nats", "--name", "hub1", "--listen", hubClient, "--leafnode-listen", hubLeaf,
		"--jetstream-domain", "hub", "--config", hubConf, "--store-dir", filepath.Join(dir, "hub"), "--log-level", "warn")
	hub.waitHTTP(t, "http://"+hubMon+"/healthz", 30*time.Second)

	hubGW, hubOps := proctest.FreeAddrOn(t, hubHost), proctest.FreeAddrOn(t, hubHost)
	hgw := start(t, "hub-gateway", []string{"FABRIC_NATS_PASSWORD=gwpw"}, "serve", "--config", nsConf,
		"--listen", hubGW, "--ops-listen", hubOps, "--nats-url", "nats://"+hubClient, "--nats-user", "gateway",
		"--data-dir", filepath.Join(dir, "hubgw"), "--log-level", "warn", "--drain-window", "0s", "--shutdown-timeout", "2s")
	hgw.waitHTTP(t, "http://"+hubOps+"/readyz", 30*time.Second)

	proxy := newLinkProxy(t, proxyHost, hubLeaf)
	leafGW, leafOps := proctest.FreeAddrOn(t, leafHost), proctest.FreeAddrOn(t, leafHost)
	lgw := start(t, "leaf-gateway", []string{"FABRIC_LEAFNODE_PASSWORD=leafpw"}, "serve", "--config", nsConf,
		"--listen", leafGW, "--ops-listen", leafOps, "--nats-listen", "off", "--nats-name", "eu1",
		"--leafnode-remote", "nats-leaf://"+proxy.ln.Addr().String(), "--leafnode-user", "leaf",
		"--jetstream-domain", "eu", "--history-domain", "hub",
		"--data-dir", filepath.Join(dir, "leafgw"), "--log-level", "info", "--drain-window", "0s", "--shutdown-timeout", "2s")
	lgw.waitHTTP(t, "http://"+leafOps+"/readyz", 40*time.Second)

	const room, chat = "room:lobby", "chat:lobby"
	hc := newClient(t, "hub", hubGW, room, chat)
	var lcs []*client
	for i := range 4 {
		lcs = append(lcs, newClient(t, fmt.Sprintf("leaf%d", i), leafGW, room, chat))
	}
	all := append([]*client{hc}, lcs...)
	for _, topic := range []string{room, chat} {
		warm(t, hc, all, topic)
		warm(t, lcs[0], all, topic)
	}

	// A publish in either region reaches both regions' clients once; the
	// persistent namespace's order is the same everywhere.
	for _, topic := range []string{room, chat} {
		for i := range 5 {
			hc.mustPush(t, topic, fmt.Sprintf("hub-%d", i))
			lcs[0].mustPush(t, topic, fmt.Sprintf("leaf-%d", i))
		}
		receivedOnce(t, all, topic, append(keys("hub", 5), keys("leaf", 5)...), 15*time.Second)
	}
	sameHistory(t, all, room)

	// Broadcasts cross the link once per message, not once per client:
	// four leaf clients, 2 × 40 messages from the hub region, the hub's
	// leaf connection counts about 80 messages out (plus a few of the
	// leaf gateway's own probe replies), where per-client delivery would
	// be 320.
	in0, out0, n := leafCounters(t, hubMon)
	if n != 1 {
		t.Fatalf("hub has %d leaf connections, want 1", n)
	}
	const burst = 40
	for i := range burst {
		hc.mustPush(t, room, fmt.Sprintf("burst-%d", i))
		hc.mustPush(t, chat, fmt.Sprintf("burst-%d", i))
	}
	receivedOnce(t, lcs, room, keys("burst", burst), 15*time.Second)
	receivedOnce(t, lcs, chat, keys("burst", burst), 15*time.Second)
	_, out1, _ := leafCounters(t, hubMon)
	if d := out1 - out0; d < 2*burst || d >= 3*burst {
		t.Fatalf("hub → leaf: %d messages crossed for %d broadcasts to %d leaf clients; want %d plus a little", d, 2*burst, len(lcs), 2*burst)
	} else {
		t.Logf("hub → leaf: %d messages crossed for %d broadcasts to %d leaf clients", d, 2*burst, len(lcs))
	}
	// And the other way: leaf-region broadcasts on the ephemeral channel.
	in1, _, _ := leafCounters(t, hubMon)
	for i := range burst {
		lcs[1].mustPush(t, chat, fmt.Sprintf("up-%d", i))
	}
	receivedOnce(t, []*client{hc}, chat, keys("up", burst), 15*time.Second)
	in2, _, _ := leafCounters(t, hubMon)
	if d := in2 - in1; d < burst || d >= 2*burst {
		t.Fatalf("leaf → hub: %d messages crossed for %d broadcasts; want %d plus a little", d, burst, burst)
	} else {
		t.Logf("leaf → hub: %d messages crossed for %d broadcasts (before the bursts: %d in)", d, burst, in0)
	}

	// One stream, one epoch: both regions hand out the same positions.
	before, ok1 := hc.chs[room].Position()
	leafPos, ok2 := lcs[0].chs[room].Position()
	if !ok1 || !ok2 || before.Epoch == "" || before.Epoch != leafPos.Epoch {
		t.Fatalf("epochs differ between regions: hub %+v, leaf %+v", before, leafPos)
	}

	// The cut: 10 s without the leaf link.
	proxy.cut()
	cutAt := time.Now()
	// The publish API of the leaf region's gateway, used for the first
	// time right after the cut, before the gateway's probe noticed it
	// (so nothing has told it the namespace is persistent): 503, not a
	// core publish that nobody stores.
	if code, retry, body := apiPublish(t, leafGW, room, "api-cut"); code != http.StatusServiceUnavailable || retry == "" {
		t.Fatalf("publish API in the leaf region right after the cut: %d (Retry-After %q) %s, want 503 with Retry-After", code, retry, body)
	}
	var leafChat, hubRoom, leafRoomAcked []string
	leafRoomFailed := map[string]int{}
	for i := 0; time.Since(cutAt) < 10*time.Second && i < 200; i++ {
		k := fmt.Sprintf("cut-%d", i)
		lcs[0].mustPush(t, chat, "leafchat-"+k)
		leafChat = append(leafChat, "leafchat-"+k)
		hc.mustPush(t, room, "hubroom-"+k)
		hubRoom = append(hubRoom, "hubroom-"+k)
		reason, err := lcs[1].push(room, "leafroom-"+k, 5*time.Second)
		switch {
		case err != nil:
			t.Fatalf("leaf room push during the cut: no reply: %v", err)
		case reason == "":
			leafRoomAcked = append(leafRoomAcked, "leafroom-"+k)
		default:
			leafRoomFailed[reason]++
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Ephemeral: the leaf region kept talking to itself.
	receivedOnce(t, lcs, chat, leafChat, 5*time.Second)
	// Persistent: nothing can be stored while the home is out of reach,
	// and the publisher is told so.
	failed := 0
	for reason, n := range leafRoomFailed {
		if reason != "publish_failed" && reason != "unavailable" && reason != "timeout" {
			t.Errorf("leaf room push during the cut refused with %q", reason)
		}
		failed += n
	}
	if failed == 0 {
		t.Fatalf("every leaf room push during the cut was acknowledged (%d): the history home was not cut off", len(leafRoomAcked))
	}
	t.Logf("during the %s cut: %d leaf chat messages delivered locally, %d hub room messages stored, leaf room pushes refused %v, acknowledged %d",
		time.Since(cutAt).Round(time.Second), len(leafChat), len(hubRoom), leafRoomFailed, len(leafRoomAcked))
	if slices.ContainsFunc(lcs[2].records(room), func(r rec) bool { return strings.HasPrefix(r.key, "hubroom-") }) {
		t.Fatal("a hub room message reached the leaf region through a cut link")
	}
	// A client arriving in the leaf region during the cut (say, moved
	// from the hub region) gets the ephemeral channel. A persistent
	// channel nobody in the region has joined needs its home to find its
	// head: refused as unavailable. One the region's gateway follows
	// resumes from the gateway's memory (recovered: what the region has
	// seen; what the home stored meanwhile follows after healing, in
	// order) — or is refused too if that memory does not reach back.
	mover := newClient(t, "mover", leafGW, chat)
	if reason, err := mover.join("room:quiet"); err != nil || reason != "unavailable" {
		t.Fatalf("a join of an unfollowed room in the leaf region during the cut: %q %v, want refused as unavailable", reason, err)
	}
	var resumed atomic.Pointer[phx.Resume]
	onResume := phx.OnResume(func(r phx.Resume) { resumed.Store(&r) })
	reason, err := mover.join(room, phx.ResumeFrom(before), onResume)
	if err != nil || (reason != "" && reason != "unavailable") {
		t.Fatalf("a resume in the leaf region during the cut: %q %v", reason, err)
	}
	joinedDuringCut := reason == ""
	t.Logf("resume in the leaf region during the cut: joined %v, %+v", joinedDuringCut, resumed.Load())

	proxy.heal()
	// Every acknowledged message reaches every client once, in order.
	acked := append(slices.Clone(hubRoom), leafRoomAcked...)
	receivedOnce(t, all, room, acked, 30*time.Second)

	// The mover resumes in the leaf region from the position it had in
	// the hub region before the cut: recovered, with exactly what the
	// hub-region client saw after that position, in the same order.
	deadline := time.Now().Add(20 * time.Second)
	for !joinedDuringCut {
		reason, err := mover.join(room, phx.ResumeFrom(before), onResume)
		if err != nil {
			t.Fatal(err)
		}
		if reason == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("room join in the leaf region still refused 20 s after healing: %q", reason)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := resumed.Load(); r == nil || !r.Recovered {
		t.Fatalf("resume across regions: %+v, want recovered", r)
	}
	var want []string
	for _, r := range hc.records(room) {
		if r.offset > before.Offset {
			want = append(want, r.key)
		}
	}
	receivedOnce(t, []*client{mover}, room, want, 15*time.Second)
	if got := mover.records(room); len(got) != len(want) || got[0].key != want[0] {
		t.Fatalf("resumed %d messages starting %v, want %d starting %s", len(got), got[0], len(want), want[0])
	}
	all = append(all, mover)
	// The leaf region stores again (once its probe saw the home again).
	deadline = time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		reason, err := lcs[1].push(room, fmt.Sprintf("after-%d", i), 5*time.Second)
		if reason == "" && err == nil {
			acked = append(acked, fmt.Sprintf("after-%d", i))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaf room pushes still fail 20 s after healing: %q %v", reason, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, _, body := apiPublish(t, leafGW, room, "api-after"); code != http.StatusOK || !strings.Contains(body, `"offset"`) {
		t.Fatalf("publish API in the leaf region after healing: %d %s", code, body)
	}
	acked = append(acked, "api-after")
	receivedOnce(t, all, room, acked, 15*time.Second)
	sameHistory(t, all, room)
}

// apiPublish posts {"K": key} as event "m" to the gateway's publish API.
func apiPublish(t *testing.T, gatewayAddr, topic, key string) (code int, retryAfter, body string) {
	t.Helper()
	req, _ := json.Marshal(map[string]any{"topic": topic, "event": "m", "data": map[string]string{"K": key}})
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post("http://"+gatewayAddr+"/api/v1/publish", "application/json", strings.NewReader(string(req)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}

// Package conformance runs the same Phoenix Channels scenarios against every
// client we can install, each driving one real Fabric (embedded NATS and
// JetStream, the gateway on loopback): the official phoenix npm client with
// and without a logger, over WebSocket and LongPoll; the community npm
// clients phoenix-channels and phoenix-socket; a raw client sending numeric
// refs; and the Go client (clients/go). Subtests are named
// TestConformance/<client>/<scenario>. The results table in
// docs/conformance.md is generated from this file (-update-table) and
// checked against it otherwise, so the document cannot drift from the suite.
package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"github.com/fabric-rt/fabric/internal/testkit"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
)

var updateTable = flag.Bool("update-table", false, "rewrite the results table in docs/conformance.md from this run")

// wait bounds every single wait (a reply, a message, a presence change).
const wait = 15 * time.Second

const testSecret = "conformance-hs256-secret-of-32-bytes"

// A scenario is one behaviour every client is asked to show.
type scenario struct {
	name string
	what string // one line for the document
	run  func(t *testing.T, e *env, c *client, d driver)
}

// A client is one way of talking to Fabric. na lists the scenarios it
// cannot express, with the reason; notes qualify a pass.
type client struct {
	name  string
	what  string
	start func(t *testing.T, e *env, c *client) driver
	na    map[string]string
	notes map[string]string
	// binaryAsJSON: binary broadcasts reach it as {"base64": …} (v1 and
	// LongPoll have no binary frames).
	binaryAsJSON bool
}

// msg is one delivered message as the client saw it.
type msg struct {
	Payload json.RawMessage // JSON payload; nil for a binary one
	Bytes   []byte          // binary payload
	Offset  string          // the offset the client was given for it
}

// joinOpts: presence attaches the client's Presence; refused means the
// join is expected to be refused (clients that would retry are told to
// leave instead).
type joinOpts struct {
	presence bool
	refused  bool
}

// driver is what a scenario asks of a client. Every call fails t when the
// client does not answer within wait.
type driver interface {
	join(t *testing.T, topic string, params map[string]any, o joinOpts) (status string, response json.RawMessage)
	push(t *testing.T, topic, event string, payload map[string]any) (status string, response json.RawMessage)
	leave(t *testing.T, topic string)
	next(t *testing.T, topic, event string) msg
	// count removes and counts the messages of event already delivered.
	count(topic, event string) int
	// closedByServer waits until the older of two joins of topic is closed.
	closedByServer(t *testing.T, topic string)
	// presence waits until the keys listed by the client's Presence satisfy ok.
	presence(t *testing.T, topic string, ok func(keys map[string]bool) bool)
	// heartbeat waits for two heartbeats answered ok.
	heartbeat(t *testing.T)
}

// unmatcher is a driver that can push to a topic it never joined (the JS
// and Go clients refuse to, or buffer the push until a join).
type unmatcher interface {
	pushUnjoined(t *testing.T, topic string) (status string, response json.RawMessage)
}

var scenarios = []scenario{
	{"join", "join a persistent topic; the reply carries its position as decimal strings", scenarioJoin},
	{"broadcast-json", "a JSON message published on NATS arrives with its offset in the ref slot", scenarioJSON},
	{"broadcast-binary", "a binary message arrives intact, and the JSON message after it too", scenarioBinary},
	{"push-reply", "a push is answered ok with its offset and broadcast back", scenarioPush},
	{"leave", "a leave ends the gateway's subscription", scenarioLeave},
	{"heartbeat", "heartbeats are answered", scenarioHeartbeat},
	{"duplicate-join", "joining a joined topic again closes the old channel; messages arrive once", scenarioDuplicate},
	{"errors", "unauthorized, invalid_topic and reserved_event refusals (raw: unmatched topic too)", scenarioErrors},
	{"presence", "Presence lists the client and another member joining and leaving", scenarioPresence},
	{"resume", "a join with epoch and offset replays what was missed, with offsets", scenarioResume},
}

const (
	naDupGo        = "the client keeps one channel per topic per socket: a second Join returns ErrAlreadyJoined before anything is sent"
	noteBase64     = "as `{\"base64\": …}`"
	noteOldPresent = "with the static Presence.syncState/syncDiff API"
)

var clients = []*client{
	{name: "phoenix-ws", what: "`phoenix` 1.8.16 (official), WebSocket, no logger", start: startPhoenix(false, false)},
	{name: "phoenix-logger-ws", what: "`phoenix` 1.8.16, WebSocket, `logger` set", start: startPhoenix(false, true)},
	{name: "phoenix-lp", what: "`phoenix` 1.8.16, LongPoll, no logger", start: startPhoenix(true, false),
		binaryAsJSON: true, notes: map[string]string{"broadcast-binary": noteBase64}},
	{name: "phoenix-logger-lp", what: "`phoenix` 1.8.16, LongPoll, `logger` set", start: startPhoenix(true, true),
		binaryAsJSON: true, notes: map[string]string{"broadcast-binary": noteBase64}},
	{name: "phoenix-channels", what: "`phoenix-channels` 1.0.0 (community; v1, Phoenix 1.2 client for Node), WebSocket, `logger` set",
		start: startCommunity("phoenix-channels"), binaryAsJSON: true,
		notes: map[string]string{"broadcast-binary": noteBase64, "presence": noteOldPresent}},
	{name: "phoenix-socket", what: "`phoenix-socket` 1.2.3 (community; v1, Phoenix 1.2 socket.js) on `ws`, `logger` set",
		start: startCommunity("phoenix-socket"), binaryAsJSON: true,
		notes: map[string]string{"broadcast-binary": noteBase64, "presence": noteOldPresent}},
	{name: "raw-numeric", what: "raw v2 client (`internal/testkit/phxclient`) sending numeric `ref` and `join_ref` (from 0), checking they are echoed as numbers",
		start: startRaw(phoenix.V2)},
	{name: "raw-numeric-v1", what: "the same over v1 JSON objects (`vsn=1.0.0`, as Python's `phxsocket` sends `\"ref\": 0`); v1 replies have no `join_ref` to check",
		start: startRaw(phoenix.V1), binaryAsJSON: true, notes: map[string]string{"broadcast-binary": noteBase64}},
	{name: "go", what: "Go client `clients/go` (package `phx`)", start: startGo,
		na: map[string]string{"duplicate-join": naDupGo}},
}

// env is the one Fabric every client talks to.
type env struct {
	app *app.App
	nc  *nats.Conn
	js  jetstream.JetStream
}

func startEnv(t *testing.T) *env {
	t.Helper()
	a := testkit.StartApp(t, app.Config{
		Listen:          "127.0.0.1:0",
		OpsListen:       "off",
		NATSListen:      "127.0.0.1:0",
		DataDir:         t.TempDir(),
		LeaveGrace:      50 * time.Millisecond,
		JWTSecret:       testSecret,
		AllowQueryToken: true,
	})
	nc := testkit.Connect(t, a.NATSURL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return &env{app: a, nc: nc, js: js}
}

// token is a connection token for sub: it may join and push on room:>
// (so joining vault:… is unauthorized).
func (e *env) token(t *testing.T, sub string) string {
	t.Helper()
	tok, err := auth.Mint(auth.Config{Secret: []byte(testSecret)}, auth.MintClaims{
		Subject: sub, Channels: []string{"room:>"}, Publish: []string{"room:>"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (e *env) socketURL() string { return "ws://" + e.app.HTTPAddr() + "/socket" }

// subject is the documented mapping for the topics the suite uses (room:a:b,
// segments of [A-Za-z0-9-] only).
func subject(topic string) string { return "fabric." + strings.ReplaceAll(topic, ":", ".") }

// publish stores a message in the topic's history the way a service that
// needs history does (a JetStream publish) and returns its offset.
func (e *env) publish(t *testing.T, topic, event string, body []byte) uint64 {
	t.Helper()
	m := nats.NewMsg(subject(topic))
	m.Header.Set("Fabric-Event", event)
	m.Data = body
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ack, err := e.js.PublishMsg(ctx, m)
	if err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
	return ack.Sequence
}

// interest counts the gateway's subscriptions on topic's live feed.
func (e *env) interest(topic string) int {
	return e.app.Embedded().NATS().GlobalAccount().Interest("fabric_live." + strings.ReplaceAll(topic, ":", "."))
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// results[client][scenario] is "pass" or "FAIL" for what this run executed.
type results struct {
	mu sync.Mutex
	m  map[string]map[string]string
}

func (r *results) set(c, s, v string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[c] == nil {
		r.m[c] = map[string]string{}
	}
	r.m[c][s] = v
}

func TestConformance(t *testing.T) {
	e := startEnv(t)
	res := &results{m: map[string]map[string]string{}}
	if *updateTable {
		// The parent's cleanup runs once every parallel client subtest is done.
		t.Cleanup(func() { writeTable(t, res) })
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			d := c.start(t, e, c)
			for _, s := range scenarios {
				if _, na := c.na[s.name]; na {
					continue
				}
				t.Run(s.name, func(t *testing.T) {
					defer func() {
						v := "pass"
						if t.Failed() {
							v = "FAIL"
						}
						res.set(c.name, s.name, v)
					}()
					s.run(t, e, c, d)
				})
			}
		})
	}
}

// topic is the scenario's own topic for the client: no two subtests share one.
func topic(c *client, scenario string, extra ...string) string {
	return strings.Join(append([]string{"room", c.name, scenario}, extra...), ":")
}

func mustStatus(t *testing.T, what, status string, resp json.RawMessage, want string) {
	t.Helper()
	if status != want {
		t.Fatalf("%s: status %q (response %s), want %q", what, status, resp, want)
	}
}

func mustReason(t *testing.T, what, status string, resp json.RawMessage, reason string) {
	t.Helper()
	mustStatus(t, what, status, resp, "error")
	var r struct {
		Reason string `json:"reason"`
	}
	if err := json.Unmarshal(resp, &r); err != nil || r.Reason != reason {
		t.Fatalf("%s: response %s, want reason %q", what, resp, reason)
	}
}

var decimal = regexp.MustCompile(`^[1-9][0-9]*$`)

// position decodes a join reply's position; both fields must be JSON strings.
func position(t *testing.T, resp json.RawMessage) (epoch, offset string, recovered *bool) {
	t.Helper()
	var r struct {
		Epoch     string `json:"epoch"`
		Offset    string `json:"offset"`
		Recovered *bool  `json:"recovered"`
	}
	if err := json.Unmarshal(resp, &r); err != nil || r.Epoch == "" || !regexp.MustCompile(`^[0-9]+$`).MatchString(r.Offset) {
		t.Fatalf("join response %s: want {\"epoch\": \"…\", \"offset\": \"<decimal>\"} (%v)", resp, err)
	}
	return r.Epoch, r.Offset, r.Recovered
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func scenarioJoin(t *testing.T, e *env, c *client, d driver) {
	st, resp := d.join(t, topic(c, "join"), nil, joinOpts{})
	mustStatus(t, "join", st, resp, "ok")
	position(t, resp)
}

func scenarioJSON(t *testing.T, e *env, c *client, d driver) {
	tp := topic(c, "json")
	st, resp := d.join(t, tp, nil, joinOpts{})
	mustStatus(t, "join", st, resp, "ok")
	body := []byte(`{"body":"hello","n":42,"list":[1,"two",null]}`)
	off := e.publish(t, tp, "news", body)
	m := d.next(t, tp, "news")
	if !jsonEqual(m.Payload, body) {
		t.Fatalf("news payload %s, want %s", m.Payload, body)
	}
	if m.Offset != strconv.FormatUint(off, 10) {
		t.Fatalf("news offset %q, want %d", m.Offset, off)
	}
}

func scenarioBinary(t *testing.T, e *env, c *client, d driver) {
	tp := topic(c, "binary")
	st, resp := d.join(t, tp, nil, joinOpts{})
	mustStatus(t, "join", st, resp, "ok")
	blob := []byte{0x00, 0xff, 'f', 'a', 'b', 0x80, '\n'}
	off := e.publish(t, tp, "blob", blob)
	// The JSON message after the binary one: phoenix.js with a logger
	// stopped delivering anything after a binary broadcast's offset frame.
	e.publish(t, tp, "after", []byte(`{"after":true}`))
	m := d.next(t, tp, "blob")
	if c.binaryAsJSON {
		var r struct {
			Base64 []byte `json:"base64"`
		}
		if m.Payload == nil || json.Unmarshal(m.Payload, &r) != nil || !bytes.Equal(r.Base64, blob) {
			t.Fatalf("blob reached this text-only client as %s (binary %x), want {\"base64\": …} of %x", m.Payload, m.Bytes, blob)
		}
	} else if m.Payload != nil || !bytes.Equal(m.Bytes, blob) {
		t.Fatalf("blob arrived as %x (JSON %s), want the bytes %x", m.Bytes, m.Payload, blob)
	}
	if m.Offset != strconv.FormatUint(off, 10) {
		t.Fatalf("blob offset %q, want %d", m.Offset, off)
	}
	if a := d.next(t, tp, "after"); !jsonEqual(a.Payload, []byte(`{"after":true}`)) {
		t.Fatalf("message after the binary one: %s", a.Payload)
	}
}

func scenarioPush(t *testing.T, e *env, c *client, d driver) {
	tp := topic(c, "push")
	st, resp := d.join(t, tp, nil, joinOpts{})
	mustStatus(t, "join", st, resp, "ok")
	st, resp = d.push(t, tp, "shout", map[string]any{"body": "hi from " + c.name})
	mustStatus(t, "push", st, resp, "ok")
	var r struct {
		Offset string `json:"offset"`
	}
	if err := json.Unmarshal(resp, &r); err != nil || !decimal.MatchString(r.Offset) {
		t.Fatalf("push reply %s: want {\"offset\": \"<decimal>\"}", resp)
	}
	m := d.next(t, tp, "shout")
	if !jsonEqual(m.Payload, []byte(`{"body":"hi from `+c.name+`"}`)) || m.Offset != r.Offset {
		t.Fatalf("pushed message came back as %s at offset %q, want it at %s", m.Payload, m.Offset, r.Offset)
	}
}

func scenarioLeave(t *testing.T, e *env, c *client, d driver) {
	tp := topic(c, "leave")
	st, resp := d.join(t, tp, nil, joinOpts{})
	mustStatus(t, "join", st, resp, "ok")
	if n := e.interest(tp); n != 1 {
		t.Fatalf("gateway subscriptions for %s after the join: %d, want 1", tp, n)
	}
	d.leave(t, tp)
	eventually(t, "the gateway to drop its subscription after the leave", func() bool { return e.interest(tp) == 0 })
}

func scenarioHeartbeat(t *testing.T, e *env, c *client, d driver) { d.heartbeat(t) }

func scenarioDuplicate(t *testing.T, e *env, c *client, d driver) {
	tp := topic(c, "dup")
	st, resp := d.join(t, tp, nil, joinOpts{})
	mustStatus(t, "first join", st, resp, "ok")
	st, resp = d.join(t, tp, nil, joinOpts{})
	mustStatus(t, "second join", st, resp, "ok")
	d.closedByServer(t, tp)
	e.publish(t, tp, "one", []byte(`{"i":1}`))
	e.publish(t, tp, "two", []byte(`{"i":2}`))
	d.next(t, tp, "one")
	d.next(t, tp, "two") // same topic, so in order after every copy of "one"
	if n := d.count(tp, "one"); n != 0 {
		t.Fatalf("message delivered %d more times after the duplicate join, want once", n)
	}
}

func scenarioErrors(t *testing.T, e *env, c *client, d driver) {
	st, resp := d.join(t, "vault:"+c.name, nil, joinOpts{refused: true})
	mustReason(t, "join outside the token's grants", st, resp, "unauthorized")
	st, resp = d.join(t, "room::"+c.name, nil, joinOpts{refused: true})
	mustReason(t, "join of a topic with an empty segment", st, resp, "invalid_topic")
	tp := topic(c, "errors")
	st, resp = d.join(t, tp, nil, joinOpts{})
	mustStatus(t, "join", st, resp, "ok")
	st, resp = d.push(t, tp, "phx_custom", map[string]any{})
	mustReason(t, "push of a reserved event name", st, resp, "reserved_event")
	st, resp = d.push(t, tp, "presence_diff", map[string]any{"joins": map[string]any{}, "leaves": map[string]any{}})
	mustReason(t, "push of presence_diff", st, resp, "reserved_event")
	if u, ok := d.(unmatcher); ok {
		st, resp = u.pushUnjoined(t, topic(c, "errors", "unjoined"))
		mustReason(t, "push to a topic not joined", st, resp, "unmatched topic")
	}
}

func scenarioPresence(t *testing.T, e *env, c *client, d driver) {
	tp := topic(c, "presence")
	st, resp := d.join(t, tp, nil, joinOpts{presence: true})
	mustStatus(t, "join", st, resp, "ok")
	d.presence(t, tp, func(k map[string]bool) bool { return k[c.name] && len(k) == 1 })
	buddy := "buddy-" + c.name
	b := dialRaw(t, e, phoenix.V2, buddy)
	st, resp = b.join(t, tp, nil, joinOpts{})
	mustStatus(t, "buddy join", st, resp, "ok")
	d.presence(t, tp, func(k map[string]bool) bool { return k[c.name] && k[buddy] && len(k) == 2 })
	b.leave(t, tp)
	d.presence(t, tp, func(k map[string]bool) bool { return k[c.name] && !k[buddy] && len(k) == 1 })
}

func scenarioResume(t *testing.T, e *env, c *client, d driver) {
	tp := topic(c, "resume")
	st, resp := d.join(t, tp, nil, joinOpts{})
	mustStatus(t, "join", st, resp, "ok")
	e.publish(t, tp, "seen", []byte(`{"i":0}`))
	seen := d.next(t, tp, "seen")
	d.leave(t, tp)
	// Until the gateway has processed the leave (LongPoll sends it later),
	// live messages still reach the old channel, and phoenix.js hands
	// broadcasts (join_ref null) to whichever channel has the topic: the
	// new one would see them twice. Phoenix behaves the same.
	eventually(t, "the gateway to process the leave", func() bool { return e.interest(tp) == 0 })
	epoch, _, _ := position(t, resp)
	var offs []uint64
	for i := 1; i <= 3; i++ {
		offs = append(offs, e.publish(t, tp, "missed", []byte(fmt.Sprintf(`{"i":%d}`, i))))
	}
	st, resp = d.join(t, tp, map[string]any{"epoch": epoch, "offset": seen.Offset}, joinOpts{})
	mustStatus(t, "resuming join", st, resp, "ok")
	// The reply's offset is where the replay ends; what the gateway had
	// not yet seen live when it answered follows as live messages.
	if _, _, rec := position(t, resp); rec == nil || !*rec {
		t.Fatalf("resuming join from %s: response %s, want recovered", seen.Offset, resp)
	}
	for i, off := range offs {
		m := d.next(t, tp, "missed")
		if !jsonEqual(m.Payload, []byte(fmt.Sprintf(`{"i":%d}`, i+1))) || m.Offset != strconv.FormatUint(off, 10) {
			t.Fatalf("replayed message %d: %s at offset %q, want i=%d at %d", i, m.Payload, m.Offset, i+1, off)
		}
	}
}

// The table.

const (
	tableBegin = "<!-- BEGIN conformance table: generated by `go test ./test/conformance -run TestConformance -update-table`; do not edit -->"
	tableEnd   = "<!-- END conformance table -->"
)

func docPath(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "docs", "conformance.md"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// renderTable writes the table for cell(client, scenario) ("pass", "FAIL",
// or "" for a scenario the client does not support).
func renderTable(cell func(c *client, s scenario) string) string {
	var b strings.Builder
	var notes []string
	ref := func(text string) string {
		for i, n := range notes {
			if n == text {
				return strconv.Itoa(i + 1)
			}
		}
		notes = append(notes, text)
		return strconv.Itoa(len(notes))
	}
	b.WriteString("| client |")
	for _, s := range scenarios {
		fmt.Fprintf(&b, " %s |", s.name)
	}
	b.WriteString("\n| --- |")
	for range scenarios {
		b.WriteString(" --- |")
	}
	b.WriteString("\n")
	for _, c := range clients {
		fmt.Fprintf(&b, "| `%s` |", c.name)
		for _, s := range scenarios {
			if why, na := c.na[s.name]; na {
				fmt.Fprintf(&b, " n/a [%s] |", ref(why))
				continue
			}
			v := cell(c, s)
			if note, ok := c.notes[s.name]; ok && v == "pass" {
				v += " [" + ref(note) + "]"
			}
			fmt.Fprintf(&b, " %s |", v)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n")
	for i, n := range notes {
		fmt.Fprintf(&b, "[%d] %s  \n", i+1, n)
	}
	b.WriteString("\nClients:\n\n")
	for _, c := range clients {
		fmt.Fprintf(&b, "- `%s`: %s\n", c.name, c.what)
	}
	b.WriteString("\nScenarios:\n\n")
	for _, s := range scenarios {
		fmt.Fprintf(&b, "- `%s`: %s\n", s.name, s.what)
	}
	return b.String()
}

func spliceTable(doc, table string) (string, bool) {
	i := strings.Index(doc, tableBegin)
	j := strings.Index(doc, tableEnd)
	if i < 0 || j < i {
		return "", false
	}
	return doc[:i+len(tableBegin)] + "\n" + table + doc[j:], true
}

func writeTable(t *testing.T, res *results) {
	res.mu.Lock()
	defer res.mu.Unlock()
	missing := 0
	table := renderTable(func(c *client, s scenario) string {
		v := res.m[c.name][s.name]
		if v == "" {
			missing++
			v = "not run"
		}
		return v
	})
	if missing > 0 {
		t.Errorf("-update-table: %d cells were not run; run the whole TestConformance to regenerate the table", missing)
		return
	}
	p := docPath(t)
	doc, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("-update-table: %v", err)
	}
	out, ok := spliceTable(string(doc), table)
	if !ok {
		t.Fatalf("-update-table: %s has no %q … %q section", p, tableBegin, tableEnd)
	}
	if err := os.WriteFile(p, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote the results table to %s", p)
}

// TestConformanceTable: the committed table is the one this suite produces
// when every supported scenario passes (which TestConformance asserts), so
// a client or scenario added, an n/a changed, or a hand edit shows up here.
func TestConformanceTable(t *testing.T) {
	if *updateTable {
		t.Log("-update-table: TestConformance rewrites the table")
		return
	}
	doc, err := os.ReadFile(docPath(t))
	if err != nil {
		t.Fatal(err)
	}
	want, ok := spliceTable(string(doc), renderTable(func(*client, scenario) string { return "pass" }))
	if !ok {
		t.Fatalf("docs/conformance.md has no %q … %q section", tableBegin, tableEnd)
	}
	if want != string(doc) {
		t.Fatalf("docs/conformance.md's table differs from what the suite runs: regenerate it with\n\tgo test ./test/conformance -run TestConformance -update-table")
	}
}

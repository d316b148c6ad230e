// Package phxnode drives the real, unmodified phoenix.js client (npm "phoenix", run by
// Node with the "ws" package as its WebSocket transport) from Go tests.
//
// Start spawns clients/js/test/puppet.mjs, which is controlled over stdin/stdout with
// newline-delimited JSON: every command gets exactly one response line, and everything
// the client observes (channel messages, socket open/close/error, channel close/error,
// presence syncs, ...) is reported as an event that the Puppet buffers in arrival order.
// Assertions stay in Go: use Next/Drain to consume events.
//
// It is meant for tests only. The npm packages must be installed first with
//
//	npm ci --prefix clients/js
//
// and Start fails (never skips) the test when they or `node` are missing.
//
// The typed wrappers (Connect, Join, Push, ...) call t.Fatalf when the puppet itself
// misbehaves (no response, process died), so they must be called from the test's own
// goroutine; Do, Next and Drain are safe from any goroutine.
package phxnode

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// DoTimeout is how long Do waits for the response to a command.
const DoTimeout = 15 * time.Second

// exitID is the id of the exit command sent by the cleanup, whose response nobody awaits.
const exitID = -1

// exitGrace is how long the cleanup waits for the puppet to exit before killing it.
const exitGrace = 3 * time.Second

// Event is one event line written by the puppet (a line with "ev" and no "id").
//
// Ev is one of:
//
//	"msg"           a message delivered to a joined channel object (every event except
//	                phx_reply; includes phx_close/phx_error/presence_* sent by the server).
//	                Topic, Event, Payload, Ref (nil for JSON null), Binary (Payload is then a
//	                base64 JSON string, see Bytes). Raw also has "join_ref".
//	"join_reply"    every reply to a channel's join, including automatic rejoins:
//	                Topic and Raw's "status"/"response".
//	"chan_close"    channel onClose: Topic, Payload ("leave" for a local leave, {} from the server)
//	"chan_error"    channel onError: Topic, Payload ({source:"transport",reason:…} or server payload)
//	"presence_sync" Topic and Raw's "list" ([{key, metas}]), see PresenceList
//	"open"          socket onOpen (Raw's "transport")
//	"close"         socket onClose: Code, Reason
//	"error"         socket onError: Message
//	"wire"          every decoded message, only when connected with opts "trace": true
//	"fatal"         uncaught exception in the puppet (Message); the process exits
//	"protocol_error" the puppet could not parse a command line
type Event struct {
	Ev      string          `json:"ev"`
	Topic   string          `json:"topic"`
	Event   string          `json:"event"`
	Payload json.RawMessage `json:"payload"`
	Ref     *string         `json:"ref"`
	Binary  bool            `json:"binary"`
	Code    int             `json:"code"`
	Reason  string          `json:"reason"`
	Message string          `json:"message"`
	Raw     json.RawMessage `json:"-"`
}

// Bytes returns the payload bytes of a binary event (base64-decoded), or the raw JSON
// payload of a non-binary one.
func (e Event) Bytes() []byte {
	if !e.Binary {
		return []byte(e.Payload)
	}
	var s string
	if err := json.Unmarshal(e.Payload, &s); err != nil {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil
	}
	return b
}

// RefString returns Ref, or "" when it is nil.
func (e Event) RefString() string {
	if e.Ref == nil {
		return ""
	}
	return *e.Ref
}

// Field unmarshals the named top-level field of the raw event line into v.
func (e Event) Field(name string, v any) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(e.Raw, &m); err != nil {
		return err
	}
	f, ok := m[name]
	if !ok {
		return fmt.Errorf("phxnode: event has no field %q", name)
	}
	return json.Unmarshal(f, v)
}

func (e Event) String() string { return string(e.Raw) }

// Presence is one entry of a presence_sync list.
type Presence struct {
	Key   string           `json:"key"`
	Metas []map[string]any `json:"metas"`
}

// PresenceList decodes the "list" of a presence_sync event.
func (e Event) PresenceList() []Presence {
	var l []Presence
	_ = e.Field("list", &l)
	return l
}

// Matchers for Next and Drain.

// Any matches every event.
func Any(Event) bool { return true }

// IsEv matches events with the given ev.
func IsEv(ev string) func(Event) bool { return func(e Event) bool { return e.Ev == ev } }

// IsMsg matches "msg" events for topic and event ("" matches any).
func IsMsg(topic, event string) func(Event) bool {
	return func(e Event) bool {
		return e.Ev == "msg" && (topic == "" || e.Topic == topic) && (event == "" || e.Event == event)
	}
}

// OnTopic matches events of the given ev ("" for any) on topic.
func OnTopic(ev, topic string) func(Event) bool {
	return func(e Event) bool { return (ev == "" || e.Ev == ev) && e.Topic == topic }
}

// Puppet is one running puppet process holding (at most) one phoenix.js Socket.
type Puppet struct {
	t   testing.TB
	cmd *exec.Cmd

	writeMu sync.Mutex
	stdin   io.WriteCloser
	nextID  atomic.Int64

	mu      sync.Mutex
	events  []Event
	notify  chan struct{} // closed and replaced whenever events grows
	pending map[int64]chan json.RawMessage

	stderr *tailBuffer

	readerDone chan struct{} // stdout reader finished (process gone or stdout closed)
	exited     chan struct{} // cmd.Wait returned
	waitErr    error
}

// Start spawns the puppet (node clients/js/test/puppet.mjs from the module root) and
// registers its shutdown with t.Cleanup. It fails the test when node or the npm packages
// are missing. Set PHXNODE_DEBUG=1 to get phoenix.js's own log (and the puppet's) on
// stderr, which is printed at the end of the test.
func Start(t testing.TB) *Puppet {
	t.Helper()
	return StartScript(t, "puppet.mjs", nil, "phoenix", "ws")
}

// StartScript is Start for another puppet script in clients/js/test speaking the same
// protocol (community.mjs drives the community npm clients): it runs
// `node clients/js/test/<script> args…` after checking that the npm packages pkgs are
// installed.
func StartScript(t testing.TB, script string, args []string, pkgs ...string) *Puppet {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("phxnode: %v", err)
	}
	jsDir := filepath.Join(root, "clients", "js")
	for _, pkg := range pkgs {
		if _, err := os.Stat(filepath.Join(jsDir, "node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("phxnode: %s npm client not installed: run `npm ci --prefix clients/js` (from %s)", pkg, root)
		}
	}
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("phxnode: `node` not found on PATH (Node 20+ is required to run the phoenix.js client): %v", err)
	}

	cmd := exec.Command(nodeBin, append([]string{filepath.Join(jsDir, "test", script)}, args...)...)
	cmd.Dir = jsDir
	cmd.Env = os.Environ()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("phxnode: stdin pipe: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("phxnode: stdout pipe: %v", err)
	}
	p := &Puppet{
		t:          t,
		cmd:        cmd,
		stdin:      stdin,
		notify:     make(chan struct{}),
		pending:    make(map[int64]chan json.RawMessage),
		stderr:     &tailBuffer{max: 1 << 20},
		readerDone: make(chan struct{}),
		exited:     make(chan struct{}),
	}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("phxnode: starting %s: %v", nodeBin, err)
	}
	go p.readLoop(stdout)
	go func() {
		<-p.readerDone
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.shutdown)
	return p
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

func (p *Puppet) readLoop(r io.Reader) {
	defer close(p.readerDone)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 64<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var head struct {
			ID *int64 `json:"id"`
			Ev string `json:"ev"`
		}
		if err := json.Unmarshal(line, &head); err != nil {
			fmt.Fprintf(p.stderr, "[phxnode] unparseable stdout line: %s\n", line)
			continue
		}
		raw := json.RawMessage(append([]byte(nil), line...))
		if head.ID != nil {
			p.mu.Lock()
			ch := p.pending[*head.ID]
			delete(p.pending, *head.ID)
			p.mu.Unlock()
			if ch != nil {
				ch <- raw
			} else if *head.ID != exitID {
				fmt.Fprintf(p.stderr, "[phxnode] response for unknown id: %s\n", line)
			}
			continue
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			fmt.Fprintf(p.stderr, "[phxnode] bad event line (%v): %s\n", err, line)
			continue
		}
		ev.Raw = raw
		if ev.Ev == "fatal" {
			fmt.Fprintf(p.stderr, "[phxnode] puppet fatal: %s\n", ev.Message)
		}
		p.mu.Lock()
		p.events = append(p.events, ev)
		close(p.notify)
		p.notify = make(chan struct{})
		p.mu.Unlock()
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(p.stderr, "[phxnode] reading stdout: %v\n", err)
	}
}

func (p *Puppet) shutdown() {
	// Ask politely: the puppet disconnects the socket and exits.
	_ = p.send(map[string]any{"id": exitID, "cmd": "exit"})
	_ = p.closeStdin()
	select {
	case <-p.exited:
	case <-time.After(exitGrace):
		_ = p.cmd.Process.Kill()
		select {
		case <-p.exited:
		case <-time.After(exitGrace):
		}
	}
	if p.t.Failed() || os.Getenv("PHXNODE_DEBUG") != "" {
		if s := p.stderr.String(); s != "" {
			p.t.Logf("phxnode: puppet stderr:\n%s", s)
		}
		if p.waitErr != nil {
			p.t.Logf("phxnode: puppet exit: %v", p.waitErr)
		}
	}
}

func (p *Puppet) closeStdin() error {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	return p.stdin.Close()
}

func (p *Puppet) send(cmd map[string]any) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	_, err = p.stdin.Write(b)
	return err
}

// ErrCommand is wrapped by the errors Do returns for an {"ok":false} response; other
// errors mean the puppet did not answer (timeout, process gone, bad JSON).
var ErrCommand = errors.New("puppet command failed")

// DoRaw sends cmd (a fresh "id" is added) and returns the raw response line. An
// {"ok":false} response yields the line and an error wrapping ErrCommand.
func (p *Puppet) DoRaw(cmd map[string]any) (json.RawMessage, error) {
	id := p.nextID.Add(1)
	msg := make(map[string]any, len(cmd)+1)
	for k, v := range cmd {
		msg[k] = v
	}
	msg["id"] = id
	ch := make(chan json.RawMessage, 1)
	p.mu.Lock()
	p.pending[id] = ch
	p.mu.Unlock()
	forget := func() {
		p.mu.Lock()
		delete(p.pending, id)
		p.mu.Unlock()
	}
	if err := p.send(msg); err != nil {
		forget()
		return nil, fmt.Errorf("phxnode: sending %v: %w", cmd["cmd"], err)
	}
	timer := time.NewTimer(DoTimeout)
	defer timer.Stop()
	var raw json.RawMessage
	select {
	case raw = <-ch:
	case <-p.readerDone:
		// the response may have been delivered just before the reader stopped
		select {
		case raw = <-ch:
		default:
			forget()
			return nil, fmt.Errorf("phxnode: puppet exited while waiting for %v response", cmd["cmd"])
		}
	case <-timer.C:
		forget()
		return nil, fmt.Errorf("phxnode: no response to %v within %v", cmd["cmd"], DoTimeout)
	}
	var st struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return raw, fmt.Errorf("phxnode: bad response %s: %w", raw, err)
	}
	if !st.OK {
		return raw, fmt.Errorf("%w: %v: %s", ErrCommand, cmd["cmd"], st.Error)
	}
	return raw, nil
}

// Do sends cmd with a fresh id and waits (up to DoTimeout) for its response, returned as
// a map (numbers are float64). For {"ok":false} the map is returned together with an
// error wrapping ErrCommand that carries the puppet's error text.
func (p *Puppet) Do(cmd map[string]any) (map[string]any, error) {
	raw, err := p.DoRaw(cmd)
	if raw == nil {
		return nil, err
	}
	var m map[string]any
	if jerr := json.Unmarshal(raw, &m); jerr != nil && err == nil {
		err = jerr
	}
	return m, err
}

// must runs cmd and fails the test unless the puppet answered (ok or not); it returns the
// raw response and the ok:false error, if any.
func (p *Puppet) must(cmd map[string]any) (json.RawMessage, error) {
	p.t.Helper()
	raw, err := p.DoRaw(cmd)
	if err != nil && !errors.Is(err, ErrCommand) {
		p.t.Fatalf("%v\npuppet stderr:\n%s", err, p.stderr.String())
	}
	return raw, err
}

// connectTopLevel lists options that Connect lifts from opts to the command itself.
var connectTopLevel = []string{"authToken", "longpoll", "wait", "trace", "debug", "connectTimeoutMs"}

// Connect creates the puppet's Socket (only one per puppet; later calls reconnect the
// existing socket, with params replacing its params when non-nil) and waits for it to
// open. params are the socket params (re-read on every reconnect, see SetSocketParams).
//
// opts keys: heartbeatIntervalMs, timeout, reconnectAfterMs and rejoinAfterMs (a number
// n means "always n ms"; an array is indexed by tries), longPollFallbackMs,
// longpollerTimeout, vsn, perMessageDeflate (false: the ws client does not offer
// compression; it does by default); and the command-level keys authToken (string), longpoll (bool:
// LongPoll instead of WebSocket), wait (false: answer immediately, watch "open"/"error"
// events instead), trace (bool: emit "wire" events), debug (bool: phoenix log to
// stderr), connectTimeoutMs (default 5000).
//
// It returns an error when the socket failed (or did not open in time) before opening;
// the socket is kept and keeps reconnecting with its reconnectAfterMs policy.
func (p *Puppet) Connect(url string, params map[string]any, opts map[string]any) error {
	p.t.Helper()
	cmd := map[string]any{"cmd": "connect", "url": url}
	if params != nil {
		cmd["params"] = params
	}
	rest := map[string]any{}
	for k, v := range opts {
		rest[k] = v
	}
	for _, k := range connectTopLevel {
		if v, ok := rest[k]; ok {
			cmd[k] = v
			delete(rest, k)
		}
	}
	cmd["opts"] = rest
	_, err := p.must(cmd)
	return err
}

// JoinResult is the response to a join command.
type JoinResult struct {
	Status   string          `json:"status"` // ok, error, timeout, closed, or a non-standard reply status
	Response json.RawMessage `json:"response"`
	Binary   bool            `json:"binary"`
}

// Join joins topic with params (re-read on every rejoin, see SetParams) and returns the
// status of the first reply ("ok", "error", "timeout"; "closed" if the channel closed
// first) and its response.
func (p *Puppet) Join(topic string, params map[string]any) (status string, response json.RawMessage) {
	p.t.Helper()
	r := p.JoinOpts(topic, params, nil)
	return r.Status, r.Response
}

// JoinOpts is Join with options: "presence" (bool: attach a Presence and emit
// presence_sync events), "leaveOnError" (bool: leave in the error callback so phoenix.js
// does not retry a refused join), "timeout" (join timeout in ms).
func (p *Puppet) JoinOpts(topic string, params map[string]any, opts map[string]any) JoinResult {
	p.t.Helper()
	cmd := map[string]any{"cmd": "join", "topic": topic}
	if params == nil {
		params = map[string]any{}
	}
	cmd["params"] = params
	for k, v := range opts {
		cmd[k] = v
	}
	raw, err := p.must(cmd)
	if err != nil {
		p.t.Fatalf("phxnode: join %s: %v", topic, err)
	}
	var r JoinResult
	if err := json.Unmarshal(raw, &r); err != nil {
		p.t.Fatalf("phxnode: join %s: bad response %s: %v", topic, raw, err)
	}
	return r
}

// PushResult is the response to a push command.
type PushResult struct {
	Status   string          `json:"status"` // ok, error, timeout, or any other reply status
	Response json.RawMessage `json:"response"`
	Binary   bool            `json:"binary"` // Response is a base64 JSON string (binary reply)
}

// Push pushes event on the joined topic and waits for the reply. A []byte payload is
// sent as a binary (ArrayBuffer) push; anything else is JSON (nil becomes {}).
func (p *Puppet) Push(topic, event string, payload any) (status string, response json.RawMessage) {
	p.t.Helper()
	r := p.PushOpts(topic, event, payload, nil)
	return r.Status, r.Response
}

// PushOpts is Push with options: "timeout" (push timeout in ms).
func (p *Puppet) PushOpts(topic, event string, payload any, opts map[string]any) PushResult {
	p.t.Helper()
	cmd := map[string]any{"cmd": "push", "topic": topic, "event": event}
	switch v := payload.(type) {
	case []byte:
		cmd["payload"] = base64.StdEncoding.EncodeToString(v)
		cmd["binary"] = true
	case nil:
		cmd["payload"] = map[string]any{}
	default:
		cmd["payload"] = v
	}
	for k, v := range opts {
		cmd[k] = v
	}
	raw, err := p.must(cmd)
	if err != nil {
		p.t.Fatalf("phxnode: push %s %s: %v", topic, event, err)
	}
	var r PushResult
	if err := json.Unmarshal(raw, &r); err != nil {
		p.t.Fatalf("phxnode: push %s %s: bad response %s: %v", topic, event, raw, err)
	}
	return r
}

// Leave leaves topic. phoenix.js closes the channel locally right away, so this returns
// before the server's reply (which the client then ignores).
func (p *Puppet) Leave(topic string) {
	p.t.Helper()
	if _, err := p.must(map[string]any{"cmd": "leave", "topic": topic}); err != nil {
		p.t.Fatalf("phxnode: leave %s: %v", topic, err)
	}
}

// SetParams changes the params the channel sends on its next (re)join.
func (p *Puppet) SetParams(topic string, params map[string]any) {
	p.t.Helper()
	if _, err := p.must(map[string]any{"cmd": "setParams", "topic": topic, "params": params}); err != nil {
		p.t.Fatalf("phxnode: setParams: %v", err)
	}
}

// SetSocketParams changes the params the socket sends on its next (re)connect.
func (p *Puppet) SetSocketParams(params map[string]any) {
	p.t.Helper()
	if _, err := p.must(map[string]any{"cmd": "setSocketParams", "params": params}); err != nil {
		p.t.Fatalf("phxnode: setSocketParams: %v", err)
	}
}

// Ping sends a heartbeat with socket.ping and returns the round-trip time, or an error if
// the socket is not connected or no reply arrived within 10 s.
func (p *Puppet) Ping() (time.Duration, error) {
	p.t.Helper()
	raw, err := p.must(map[string]any{"cmd": "ping"})
	if err != nil {
		return 0, err
	}
	var r struct {
		RTT float64 `json:"rtt"`
	}
	_ = json.Unmarshal(raw, &r)
	return time.Duration(r.RTT * float64(time.Millisecond)), nil
}

// Disconnect calls socket.disconnect() and returns once phoenix.js reports it done.
// code (0 for none) and reason are passed on to the close frame.
func (p *Puppet) Disconnect(code int, reason string) {
	p.t.Helper()
	cmd := map[string]any{"cmd": "disconnect"}
	if code != 0 {
		cmd["code"] = code
		cmd["reason"] = reason
	}
	if _, err := p.must(cmd); err != nil {
		p.t.Fatalf("phxnode: disconnect: %v", err)
	}
}

// State is the response to a state command.
type State struct {
	Connected       bool              `json:"connected"`
	ConnectionState string            `json:"connectionState"` // connecting, open, closing, closed
	Transport       string            `json:"transport"`       // websocket, longpoll ("" before connect)
	EverOpened      bool              `json:"everOpened"`
	Channels        map[string]string `json:"channels"` // topic -> closed|errored|joined|joining|leaving
	Session         map[string]string `json:"session"`  // the in-memory sessionStorage (phx:fallback:LongPoll)
}

// State reports the socket and channel states as phoenix.js sees them.
func (p *Puppet) State() State {
	p.t.Helper()
	raw, err := p.must(map[string]any{"cmd": "state"})
	if err != nil {
		p.t.Fatalf("phxnode: state: %v", err)
	}
	var s State
	if err := json.Unmarshal(raw, &s); err != nil {
		p.t.Fatalf("phxnode: state: bad response %s: %v", raw, err)
	}
	return s
}

// Next returns (and removes) the oldest buffered event matching match, waiting up to
// timeout for one to arrive. Non-matching events stay buffered in order. It returns false
// on timeout or when the puppet has exited and no buffered event matches.
func (p *Puppet) Next(timeout time.Duration, match func(Event) bool) (Event, bool) {
	if match == nil {
		match = Any
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		p.mu.Lock()
		for i, e := range p.events {
			if match(e) {
				p.events = append(p.events[:i:i], p.events[i+1:]...)
				p.mu.Unlock()
				return e, true
			}
		}
		notify := p.notify
		p.mu.Unlock()
		select {
		case <-notify:
		case <-timer.C:
			return Event{}, false
		case <-p.readerDone:
			// one last scan: the final events were appended before readerDone closed
			p.mu.Lock()
			for i, e := range p.events {
				if match(e) {
					p.events = append(p.events[:i:i], p.events[i+1:]...)
					p.mu.Unlock()
					return e, true
				}
			}
			p.mu.Unlock()
			return Event{}, false
		}
	}
}

// MustNext is Next that fails the test (listing the buffered events) on timeout.
func (p *Puppet) MustNext(timeout time.Duration, what string, match func(Event) bool) Event {
	p.t.Helper()
	e, ok := p.Next(timeout, match)
	if !ok {
		p.t.Fatalf("phxnode: no %s event within %v; buffered events:\n%s\npuppet stderr:\n%s",
			what, timeout, p.dump(), p.stderr.String())
	}
	return e
}

// Drain returns (and removes) all buffered events matching match, in arrival order.
func (p *Puppet) Drain(match func(Event) bool) []Event {
	if match == nil {
		match = Any
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Event
	kept := p.events[:0]
	for _, e := range p.events {
		if match(e) {
			out = append(out, e)
		} else {
			kept = append(kept, e)
		}
	}
	for i := len(kept); i < len(p.events); i++ {
		p.events[i] = Event{}
	}
	p.events = kept
	return out
}

// Buffered returns a copy of the buffered events without removing them.
func (p *Puppet) Buffered() []Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Event(nil), p.events...)
}

// Stderr returns what the puppet wrote to stderr so far (the last MiB).
func (p *Puppet) Stderr() string { return p.stderr.String() }

func (p *Puppet) dump() string {
	var sb strings.Builder
	for _, e := range p.Buffered() {
		sb.WriteString("  ")
		sb.Write(e.Raw)
		sb.WriteByte('\n')
	}
	return sb.String()
}

// tailBuffer is a goroutine-safe writer keeping the last max bytes.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

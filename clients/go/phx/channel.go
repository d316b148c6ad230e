package phx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gobwas/ws"
)

// Message is one message a channel received.
type Message struct {
	Topic   string
	Event   string
	Payload json.RawMessage // a JSON message's payload (nil for binary)
	Binary  []byte          // a binary message's payload (nil for JSON)
	// Offset is the message's position in a persistent namespace's
	// history (0 elsewhere: ephemeral namespaces, presence events).
	Offset uint64
}

// Reply answers a Join, Push or Leave.
type Reply struct {
	Status   string          // "ok", "error", or what the server chose
	Response json.RawMessage // JSON response (nil for a binary reply)
	Binary   []byte          // a binary reply's response
}

// OK reports whether Status is "ok".
func (r Reply) OK() bool { return r.Status == "ok" }

func (r Reply) err() error {
	if r.OK() {
		return nil
	}
	return &ReplyError{Reply: r}
}

func parseReply(f frame) Reply {
	if f.isBinary {
		return Reply{Status: f.status, Binary: f.binary}
	}
	var p struct {
		Status   string          `json:"status"`
		Response json.RawMessage `json:"response"`
	}
	_ = json.Unmarshal(f.payload, &p) // a reply that does not decode has no status: an error to the caller
	return Reply{Status: p.Status, Response: p.Response}
}

// Position is a place in a persistent channel's history: the epoch names
// the stream's incarnation, the offset the last message seen.
type Position struct {
	Epoch  string
	Offset uint64
}

// Resume reports how a join that carried a position went (every rejoin
// after a reconnect does, once the channel knows its position).
type Resume struct {
	// Recovered: the missed messages follow, in order, then live ones.
	Recovered bool
	// Reason, when not Recovered: history_gone (retention dropped
	// messages after From), history_cleared (a moderator cleared the
	// channel after From), epoch_changed (the stream was recreated or
	// restored) or offset_ahead (From is beyond the stream). The channel
	// continues live from To; whatever lay between is lost: reload state.
	Reason string
	From   Position // what the client asked to resume from
	To     Position // where the channel continues (From when Recovered)
}

// ChannelOption configures a channel at Join.
type ChannelOption func(*Channel)

// OnMessage calls fn for every message the channel receives (presence
// events included), on the socket's reader goroutine, in order.
func OnMessage(fn func(Message)) ChannelOption {
	return func(c *Channel) { c.onMessage = append(c.onMessage, fn) }
}

// On calls fn for every message with the given event.
func On(event string, fn func(Message)) ChannelOption {
	return func(c *Channel) {
		if c.handlers == nil {
			c.handlers = map[string][]func(Message){}
		}
		c.handlers[event] = append(c.handlers[event], fn)
	}
}

// OnResume calls fn after every join that carried a position, with the
// outcome; Resume.Recovered false is a gap the app must deal with.
func OnResume(fn func(Resume)) ChannelOption { return func(c *Channel) { c.onResume = fn } }

// OnClose calls fn when the server ends the channel for good (phx_close:
// the channel is gone, it will not rejoin). Not called after Leave.
func OnClose(fn func()) ChannelOption { return func(c *Channel) { c.onClose = fn } }

// ResumeFrom makes the first join resume from p (a position saved by an
// earlier process, from Channel.Position).
func ResumeFrom(p Position) ChannelOption {
	return func(c *Channel) { c.pos, c.hasPos = p, p.Epoch != "" }
}

// WithPresence feeds the channel's presence_state and presence_diff
// events into p.
func WithPresence(p *Presence) ChannelOption { return func(c *Channel) { c.presence = p } }

type chanState int

const (
	stNeedJoin chanState = iota // waiting for a connection or its rejoin time
	stJoining                   // join sent, no reply yet
	stJoined
	stClosed // left, refused at first join, or closed by the server
)

// Channel is a joined topic. It rejoins by itself after a reconnect or a
// server-side error, resuming from its position. Safe for concurrent use.
type Channel struct {
	s      *Socket
	topic  string
	params any

	// Set at Join, read-only after.
	onMessage []func(Message)
	handlers  map[string][]func(Message)
	onResume  func(Resume)
	onClose   func()
	presence  *Presence

	// Guarded by s.mu.
	state    chanState
	joinRef  string
	joined   chan struct{} // closed while joined
	done     chan struct{} // closed when the channel ends
	pos      Position
	hasPos   bool // pos.Epoch known: a persistent channel, rejoins resume
	rejoins  int  // failed rejoins since the last success
	rejoinAt time.Time
	waiter   chan result // the first Join, until its reply
	response json.RawMessage

	// Reader goroutine only: a binary message waiting for the
	// fabric:offset frame that follows it in a persistent namespace.
	heldBinary *Message
}

// ParamsFunc supplies join params; it is called before every (re)join.
type ParamsFunc func() any

// Join joins topic and waits for the reply. params is any value that
// marshals to a JSON object (nil: {}), or a ParamsFunc. If the socket is
// reconnecting, Join waits for the connection (up to ctx). A refusal is a
// *ReplyError. Register handlers with the options: messages can follow the
// reply at once (a resume replays them).
func (s *Socket) Join(ctx context.Context, topic string, params any, opts ...ChannelOption) (*Channel, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ch := &Channel{s: s, topic: topic, params: params, joined: make(chan struct{}), done: make(chan struct{})}
	for _, o := range opts {
		o(ch)
	}
	switch params.(type) {
	case ParamsFunc, func() any:
		// Called before each join; a bad result is retried, and reported
		// through Options.OnError.
	default:
		if _, err := marshalObject(params); err != nil {
			return nil, fmt.Errorf("phx: join params: %w", err)
		}
	}
	waiter := make(chan result, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	if s.channels[topic] != nil {
		s.mu.Unlock()
		return nil, ErrAlreadyJoined
	}
	ch.waiter = waiter
	s.channels[topic] = ch
	s.mu.Unlock()
	ch.sendJoin()
	select {
	case r := <-waiter:
		if r.err != nil {
			return nil, r.err
		}
		return ch, nil
	case <-ctx.Done():
		// Leave sends phx_leave (the join may still succeed server-side)
		// and, ctx being done, does not wait for its reply.
		_ = ch.Leave(ctx) // ctx's error is the one to report
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrClosed
	}
}

// Topic is the channel's topic.
func (c *Channel) Topic() string { return c.topic }

// Joined reports whether the channel is joined right now (not while it
// rejoins after a reconnect).
func (c *Channel) Joined() bool {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.state == stJoined
}

// Position is the channel's latest position; ok is false in an ephemeral
// namespace (no history) or before the first join reply.
func (c *Channel) Position() (p Position, ok bool) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.pos, c.hasPos
}

// Response is the latest join reply's response (the app's join data).
func (c *Channel) Response() json.RawMessage {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.response
}

// Done is closed when the channel ends (Leave, phx_close, socket Close).
func (c *Channel) Done() <-chan struct{} { return c.done }

// Push sends event with a JSON payload (any value that marshals to a JSON
// object; a json.RawMessage is sent as is) and waits for the reply. While
// the channel rejoins, Push waits for it (up to ctx). A non-ok reply is
// returned with a *ReplyError; a connection lost before the reply gives
// ErrDisconnected (the server may have handled the push).
func (c *Channel) Push(ctx context.Context, event string, payload any) (Reply, error) {
	raw, err := marshalObject(payload)
	if err != nil {
		return Reply{}, err
	}
	return c.push(ctx, func(b []byte, joinRef, ref string) ([]byte, error) {
		return appendText(b, joinRef, ref, c.topic, event, raw), nil
	}, false)
}

// PushBinary sends event with a binary payload (a v2 binary frame; the
// join ref, ref, topic and event must each fit in 255 bytes).
func (c *Channel) PushBinary(ctx context.Context, event string, payload []byte) (Reply, error) {
	return c.push(ctx, func(b []byte, joinRef, ref string) ([]byte, error) {
		return appendBinaryPush(b, joinRef, ref, c.topic, event, payload)
	}, true)
}

func (c *Channel) push(ctx context.Context, build func(b []byte, joinRef, ref string) ([]byte, error), bin bool) (Reply, error) {
	s := c.s
	ctx, cancel := s.bound(ctx)
	defer cancel()
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return Reply{}, ErrClosed
		}
		if c.state == stClosed {
			s.mu.Unlock()
			return Reply{}, ErrChannelClosed
		}
		if c.state == stJoined && s.conn != nil {
			break
		}
		joined := c.joined
		s.mu.Unlock()
		select {
		case <-joined:
		case <-c.done:
		case <-s.done:
		case <-ctx.Done():
			return Reply{}, ctx.Err()
		}
	}
	ref := s.nextRefLocked()
	p := &pending{done: make(chan result, 1), pushedOn: c}
	s.pending[ref] = p
	conn, joinRef := s.conn, c.joinRef
	s.mu.Unlock()
	op := ws.OpText
	if bin {
		op = ws.OpBinary
	}
	if err := s.writeFrame(conn, op, func(b []byte) ([]byte, error) { return build(b, joinRef, ref) }); err != nil {
		s.drop(ref)
		if errors.Is(err, errFieldTooLong) {
			return Reply{}, err
		}
		return Reply{}, fmt.Errorf("%w: %v", ErrDisconnected, err)
	}
	select {
	case r := <-p.done:
		return r.reply, r.err
	case <-ctx.Done():
		s.drop(ref)
		return Reply{}, ctx.Err()
	}
}

// drop forgets a request nobody waits for any more.
func (s *Socket) drop(ref string) {
	s.mu.Lock()
	delete(s.pending, ref)
	s.mu.Unlock()
}

// Leave leaves the channel and waits for the server's answer (up to ctx).
// The channel is gone either way: it will not rejoin.
func (c *Channel) Leave(ctx context.Context) error {
	s := c.s
	ctx, cancel := s.bound(ctx)
	defer cancel()
	s.mu.Lock()
	if c.state == stClosed {
		s.mu.Unlock()
		return nil
	}
	state, joinRef, conn := c.state, c.joinRef, s.conn
	c.endLocked()
	if s.channels[c.topic] == c {
		delete(s.channels, c.topic)
	}
	if conn == nil || (state != stJoined && state != stJoining) {
		s.mu.Unlock()
		return nil
	}
	ref := s.nextRefLocked()
	p := &pending{done: make(chan result, 1)}
	s.pending[ref] = p
	s.mu.Unlock()
	if err := s.writeText(conn, joinRef, ref, c.topic, eventLeave, nil); err != nil {
		s.drop(ref)
		return fmt.Errorf("%w: %v", ErrDisconnected, err)
	}
	select {
	case r := <-p.done:
		return r.err
	case <-ctx.Done():
		s.drop(ref)
		return ctx.Err()
	}
}

// endLocked marks the channel ended and wakes everything waiting on it.
func (c *Channel) endLocked() {
	if c.state == stClosed {
		return
	}
	c.state = stClosed
	close(c.done)
	if c.waiter != nil {
		c.waiter <- result{err: ErrChannelClosed}
		c.waiter = nil
	}
}

// joinPayload is the app's params plus, once the channel knows its
// position, {"epoch": E, "offset": "N"}: the gateway then replays what the
// channel missed.
func (c *Channel) joinPayload() ([]byte, error) {
	p := c.params
	if f, ok := p.(ParamsFunc); ok {
		p = f()
	} else if f, ok := p.(func() any); ok {
		p = f()
	}
	raw, err := marshalObject(p)
	if err != nil {
		return nil, fmt.Errorf("phx: join params: %w", err)
	}
	c.s.mu.Lock()
	pos, has := c.pos, c.hasPos
	c.s.mu.Unlock()
	if !has {
		return raw, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("phx: join params: %w", err)
	}
	if m == nil {
		m = map[string]json.RawMessage{}
	}
	m["epoch"], _ = json.Marshal(pos.Epoch)
	m["offset"] = json.RawMessage(`"` + strconv.FormatUint(pos.Offset, 10) + `"`)
	return json.Marshal(m)
}

// marshalObject encodes v, which must be a JSON object (nil: {}).
func marshalObject(v any) ([]byte, error) {
	var raw []byte
	switch v := v.(type) {
	case nil:
		return []byte("{}"), nil
	case json.RawMessage:
		raw = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		raw = b
	}
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return raw, nil
		}
		break
	}
	return nil, fmt.Errorf("phx: payload must be a JSON object, got %.40s", raw)
}

// sendJoin sends a join if the channel needs one and there is a
// connection; the reply arrives through joinReply.
func (c *Channel) sendJoin() {
	s := c.s
	payload, err := c.joinPayload()
	s.mu.Lock()
	if c.state != stNeedJoin || s.conn == nil {
		s.mu.Unlock()
		return
	}
	if err != nil {
		// A ParamsFunc that stopped producing an object: retry later.
		c.joinFailedLocked(time.Now())
		s.mu.Unlock()
		s.reportError(fmt.Errorf("phx: rejoin %s: %w", c.topic, err))
		return
	}
	ref := s.nextRefLocked()
	c.state, c.joinRef = stJoining, ref
	s.pending[ref] = &pending{ch: c, deadline: time.Now().Add(s.opts.JoinTimeout)}
	conn := s.conn
	s.mu.Unlock()
	if err := s.writeText(conn, ref, ref, c.topic, eventJoin, payload); err != nil {
		conn.Close() // the reader notices and everything rejoins after the reconnect
	}
}

// joinFailedLocked schedules a rejoin with backoff after a refused or
// unanswered join.
func (c *Channel) joinFailedLocked(now time.Time) {
	if c.state == stClosed {
		return
	}
	if c.state == stJoined {
		c.joined = make(chan struct{})
	}
	c.state = stNeedJoin
	c.rejoinAt = now.Add(c.s.opts.Rejoin.Delay(c.rejoins))
	c.rejoins++
	c.s.wake()
}

// disconnectedLocked: the connection is gone; rejoin as soon as there is a
// new one. A held binary message is dropped: the offset did not move past
// it, so the resume replays it.
func (c *Channel) disconnectedLocked() {
	if c.state == stClosed {
		return
	}
	if c.state == stJoined {
		c.joined = make(chan struct{})
	}
	c.state = stNeedJoin
	c.rejoinAt = time.Time{}
	c.heldBinary = nil
}

// joinReply handles the reply to one of this channel's joins (reader
// goroutine).
func (c *Channel) joinReply(joinRef string, r Reply) {
	s := c.s
	s.mu.Lock()
	if c.state != stJoining || c.joinRef != joinRef {
		s.mu.Unlock()
		return
	}
	waiter := c.waiter
	if !r.OK() {
		if waiter != nil {
			// The app asked for this join: it decides, no retry.
			c.waiter = nil
			c.endLocked()
			if s.channels[c.topic] == c {
				delete(s.channels, c.topic)
			}
			s.mu.Unlock()
			waiter <- result{reply: r, err: r.err()}
			return
		}
		c.joinFailedLocked(time.Now())
		s.mu.Unlock()
		s.reportError(fmt.Errorf("phx: rejoin %s: %w", c.topic, r.err()))
		return
	}
	c.waiter = nil
	c.state = stJoined
	close(c.joined)
	c.rejoins = 0
	s.attempts = 0
	c.response = r.Response
	from, had := c.pos, c.hasPos
	var resp struct {
		Epoch     string          `json:"epoch"`
		Offset    json.RawMessage `json:"offset"`
		Recovered *bool           `json:"recovered"`
		Reason    string          `json:"reason"`
	}
	_ = json.Unmarshal(r.Response, &resp) // fields missing or malformed read as absent
	off, offOK := parseOffset(resp.Offset)
	var res *Resume
	if resp.Epoch != "" && offOK {
		if resp.Recovered != nil && *resp.Recovered {
			// The missed messages follow and move the offset.
			c.pos.Epoch = resp.Epoch
		} else {
			c.pos = Position{Epoch: resp.Epoch, Offset: off}
		}
		c.hasPos = true
		if had && resp.Recovered != nil {
			res = &Resume{Recovered: *resp.Recovered, Reason: resp.Reason, From: from, To: c.pos}
		}
	}
	s.mu.Unlock()
	if res != nil && c.onResume != nil {
		c.onResume(*res)
	}
	if waiter != nil {
		waiter <- result{reply: r}
	}
}

// handle takes one frame for this channel (reader goroutine).
func (c *Channel) handle(f frame) {
	s := c.s
	switch f.event {
	case eventError:
		// The server-side instance crashed: rejoin (and resume) later.
		// Its pushes will never be answered.
		var failed []*pending
		s.mu.Lock()
		if c.state == stJoined || c.state == stJoining {
			c.heldBinary = nil
			c.joinFailedLocked(time.Now())
			for ref, p := range s.pending {
				if p.pushedOn == c {
					delete(s.pending, ref)
					failed = append(failed, p)
				}
			}
		}
		s.mu.Unlock()
		for _, p := range failed {
			p.done <- result{err: ErrDisconnected}
		}
		s.reportError(fmt.Errorf("phx: %s: the server reported the channel crashed (phx_error); rejoining", c.topic))
		return
	case eventClose:
		c.flushHeld()
		s.mu.Lock()
		ended := c.state != stClosed
		c.endLocked()
		if s.channels[c.topic] == c {
			delete(s.channels, c.topic)
		}
		s.mu.Unlock()
		if ended && c.onClose != nil {
			c.onClose()
		}
		return
	case eventOffset:
		off, ok := offsetFrame(f)
		if !ok {
			return
		}
		c.advance(off)
		if m := c.heldBinary; m != nil {
			c.heldBinary = nil
			m.Offset = off
			c.dispatch(*m)
		}
		return
	}
	s.mu.Lock()
	state, persistent := c.state, c.hasPos
	s.mu.Unlock()
	if state != stJoined && state != stJoining {
		return
	}
	c.flushHeld()
	m := Message{Topic: f.topic, Event: f.event}
	if f.isBinary {
		m.Binary = f.binary
		if persistent && f.joinRef == "" {
			// Its offset comes in the next frame (fabric:offset).
			c.heldBinary = &m
			return
		}
	} else {
		m.Payload = f.payload
		if off, ok := refOffset(f.ref); ok {
			m.Offset = off
			c.advance(off)
		}
	}
	if c.presence != nil {
		c.presence.handle(f.event, m.Payload, c.currentJoinRef())
	}
	c.dispatch(m)
}

// flushHeld delivers a held binary message whose offset frame did not
// come (the frame after it was something else).
func (c *Channel) flushHeld() {
	if m := c.heldBinary; m != nil {
		c.heldBinary = nil
		c.dispatch(*m)
	}
}

func (c *Channel) currentJoinRef() string {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	return c.joinRef
}

func (c *Channel) advance(off uint64) {
	c.s.mu.Lock()
	if c.hasPos {
		c.pos.Offset = off
	}
	c.s.mu.Unlock()
}

func (c *Channel) dispatch(m Message) {
	for _, fn := range c.onMessage {
		fn(m)
	}
	for _, fn := range c.handlers[m.Event] {
		fn(m)
	}
}

// refOffset reads an offset from a frame's ref slot: a decimal string.
func refOffset(ref string) (uint64, bool) {
	if ref == "" || ref[0] < '0' || ref[0] > '9' {
		return 0, false
	}
	n, err := strconv.ParseUint(ref, 10, 64)
	return n, err == nil && n > 0
}

// parseOffset reads an offset given as a JSON number or a decimal string.
func parseOffset(raw json.RawMessage) (uint64, bool) {
	if len(raw) == 0 {
		return 0, false
	}
	s := string(raw)
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// offsetFrame reads a fabric:offset frame: the payload {"offset": N} (a
// string or a number) when present, else the ref slot (older gateways
// sent a null payload).
func offsetFrame(f frame) (uint64, bool) {
	var p struct {
		Offset json.RawMessage `json:"offset"`
	}
	if json.Unmarshal(f.payload, &p) == nil {
		if n, ok := parseOffset(p.Offset); ok && n > 0 {
			return n, true
		}
	}
	return refOffset(f.ref)
}

// Package natslink tells, within seconds and without ever blocking its
// callers, whether the gateway's NATS link (and the JetStream streams it
// relies on) can do its job right now.
//
// nats.go alone notices a silently dropped link (packets lost, no RST)
// only after MaxPingsOut unanswered pings, PingInterval apart, and reports
// it through Status, which takes the connection lock that nats.go holds
// across every dial attempt while it reconnects. A Monitor instead sends
// its own round trip (PING/PONG, nc.FlushWithContext) every Interval with
// a deadline of its own, declares the link down after Failures probes in a
// row failed or timed out (or at once when nats.go reports a disconnect),
// and keeps the answer in an atomic that joins, pushes, /readyz and the
// metrics read for free. For each watched stream it also asks JetStream
// for the stream's info, which only a stream leader answers: a stream
// without quorum is down while the connection itself is fine.
package natslink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker"
)

// Defaults: with them a silent link is declared down 4–6 s after it went
// silent (two probes in a row unanswered within 2 s), well within the
// 15 s target, while one slow PONG (a GC pause, a busy server) does not
// flip readiness.
const (
	DefaultInterval = 2 * time.Second
	DefaultTimeout  = 2 * time.Second
	DefaultFailures = 2
)

// ErrDown wraps every error the Monitor reports; it wraps
// broker.ErrUnavailable.
var ErrDown = fmt.Errorf("%w: NATS", broker.ErrUnavailable)

// Config configures a Monitor.
type Config struct {
	Conn *nats.Conn
	// Interval between probes; Timeout bounds each; Failures probes in a
	// row that failed mark the link (or a stream) down. Zero: defaults.
	Interval, Timeout time.Duration
	Failures          int
	// Streams are JetStream streams to probe (persistent namespaces), in
	// JetStream domain Domain ("": the connected server's own).
	Streams []string
	Domain  string
	// OnStreamUp, when set, is called (from the Monitor's goroutine) when
	// a stream that was down answers again: messages stored meanwhile
	// (say, in a region that was cut off) never came live.
	OnStreamUp func(stream string)
	// OnChange, when set, is called (from the Monitor's goroutine) when
	// the link goes down or comes back.
	OnChange func(up bool)
	Logger   *slog.Logger
}

// Monitor watches one connection. Its methods never block.
type Monitor struct {
	cfg  Config
	js   jetstream.JetStream
	link state
	strs map[string]*state
	kick chan struct{}
	stop chan struct{}
	done chan struct{}
	once sync.Once

	probes, failed atomic.Uint64
	downs          atomic.Uint64

	watchers atomic.Pointer[[]watcher] // Watch; replaced whole, read without a lock
}

// watcher is one Watch registration.
type watcher struct {
	up       func()
	streamUp func(stream string)
}

// state is one watched thing: the link or a stream.
type state struct {
	down  atomic.Pointer[string] // nil while up, else why
	since atomic.Int64           // unix nanos of the last change
	fails int                    // consecutive failures (Monitor goroutine only)
}

func (s *state) err(what string) error {
	if why := s.down.Load(); why != nil {
		return fmt.Errorf("%w: %s %s", ErrDown, what, *why)
	}
	return nil
}

// New starts watching; the link starts up (the caller just connected).
func New(cfg Config) (*Monitor, error) {
	if cfg.Conn == nil {
		return nil, errors.New("natslink: nil connection")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Failures <= 0 {
		cfg.Failures = DefaultFailures
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var js jetstream.JetStream
	var err error
	if cfg.Domain != "" {
		js, err = jetstream.NewWithDomain(cfg.Conn, cfg.Domain)
	} else {
		js, err = jetstream.New(cfg.Conn)
	}
	if err != nil {
		return nil, err
	}
	m := &Monitor{cfg: cfg, js: js, strs: map[string]*state{}, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	for _, s := range cfg.Streams {
		m.strs[s] = &state{}
	}
	go m.run()
	return m, nil
}

// Err is nil while the link is up, else why it is down (wrapping ErrDown).
func (m *Monitor) Err() error { return m.link.err("link") }

// StreamErr is Err, or why stream is down. Streams not watched only
// depend on the link.
func (m *Monitor) StreamErr(stream string) error {
	if err := m.Err(); err != nil {
		return err
	}
	if s := m.strs[stream]; s != nil {
		return s.err("stream " + stream)
	}
	return nil
}

// DownSince is when the link went down (zero while up).
func (m *Monitor) DownSince() time.Time {
	if m.link.down.Load() == nil {
		return time.Time{}
	}
	return time.Unix(0, m.link.since.Load())
}

// Stats are the Monitor's counters.
type Stats struct {
	Probes, Failed uint64 // link probes sent, and those that failed or timed out
	Downs          uint64 // times the link was declared down
}

// Stats returns a snapshot.
func (m *Monitor) Stats() Stats {
	return Stats{Probes: m.probes.Load(), Failed: m.failed.Load(), Downs: m.downs.Load()}
}

// Disconnected marks the link down at once: call it from nats.go's
// DisconnectErrHandler.
func (m *Monitor) Disconnected(err error) {
	why := "disconnected"
	if err != nil {
		why += ": " + err.Error()
	}
	m.set(&m.link, false, why, true)
}

// Reconnected probes at once (call it from nats.go's ReconnectHandler), so
// readiness returns within a round trip of the link healing.
func (m *Monitor) Reconnected() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Watch registers up, called when the link comes back after being declared
// down, and streamUp, called when a watched stream answers again (both
// after Config.OnChange and OnStreamUp, on the Monitor's goroutine: they
// must not block). The broker uses it to catch its channels up by itself.
func (m *Monitor) Watch(up func(), streamUp func(stream string)) {
	for {
		old := m.watchers.Load()
		var ws []watcher
		if old != nil {
			ws = append(ws, *old...)
		}
		ws = append(ws, watcher{up: up, streamUp: streamUp})
		if m.watchers.CompareAndSwap(old, &ws) {
			return
		}
	}
}

// notify calls the watchers' up (stream "") or streamUp.
func (m *Monitor) notify(stream string) {
	ws := m.watchers.Load()
	if ws == nil {
		return
	}
	for _, w := range *ws {
		switch {
		case stream == "" && w.up != nil:
			w.up()
		case stream != "" && w.streamUp != nil:
			w.streamUp(stream)
		}
	}
}

// Close stops the probes.
func (m *Monitor) Close() {
	m.once.Do(func() { close(m.stop) })
	<-m.done
}

func (m *Monitor) run() {
	defer close(m.done)
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	var pending chan error // a probe still waiting for the connection lock
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		case <-m.kick:
		}
		if pending != nil {
			select {
			case <-pending: //nolint:errcheck // the stale probe's answer was already counted as a failure
			default:
				// Still stuck behind nats.go's lock: another failure,
				// without piling up goroutines.
				m.failed.Add(1)
				m.fail(&m.link, "unanswered round trip (stuck)")
				continue
			}
		}
		m.probes.Add(1)
		pending = m.roundTrip()
		timer := time.NewTimer(m.cfg.Timeout)
		var err error
		select {
		case err = <-pending:
			pending = nil
		case <-timer.C:
			err = context.DeadlineExceeded
		case <-m.stop:
			timer.Stop()
			return
		}
		timer.Stop()
		if err != nil {
			m.failed.Add(1)
			m.fail(&m.link, "round trip failed: "+err.Error())
			continue
		}
		m.set(&m.link, true, "", false)
		m.probeStreams()
	}
}

// roundTrip runs one PING/PONG on its own goroutine: FlushWithContext
// takes the connection lock first, which nats.go may hold for a whole
// dial attempt, so the deadline is enforced here, outside.
func (m *Monitor) roundTrip() chan error {
	ch := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
		defer cancel()
		ch <- m.cfg.Conn.FlushWithContext(ctx)
	}()
	return ch
}

// probeStreams asks each watched stream's leader for its info (the link
// just answered, so a timeout here means the stream has no leader).
// All at once, so that a JetStream outage costs one Timeout per round,
// not one per stream, before the link is probed again.
func (m *Monitor) probeStreams() {
	if len(m.strs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Timeout)
	defer cancel()
	errs := make(map[string]error, len(m.strs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name := range m.strs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := m.js.Stream(ctx, name)
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	for name, err := range errs {
		if err != nil {
			m.fail(m.strs[name], name+": no answer from its leader: "+err.Error())
			continue
		}
		wasDown := m.strs[name].down.Load() != nil
		m.set(m.strs[name], true, "", false)
		if wasDown {
			m.cfg.Logger.Info("JetStream stream available again", "stream", name)
			if m.cfg.OnStreamUp != nil {
				m.cfg.OnStreamUp(name)
			}
			m.notify(name)
		}
	}
}

func (m *Monitor) fail(s *state, why string) {
	s.fails++
	if s.fails >= m.cfg.Failures {
		m.set(s, false, why, false)
	}
}

// set records a state change (Monitor goroutine, or nats.go's callback
// goroutine for Disconnected: both only swap atomics).
func (m *Monitor) set(s *state, up bool, why string, now bool) {
	if up {
		if s.fails = 0; s.down.Swap(nil) != nil {
			s.since.Store(time.Now().UnixNano())
			if s == &m.link {
				m.cfg.Logger.Info("NATS link is up again")
				if m.cfg.OnChange != nil {
					m.cfg.OnChange(true)
				}
				m.notify("")
			}
		}
		return
	}
	if !now && s.down.Load() != nil {
		return
	}
	if s.down.Swap(&why) == nil {
		s.since.Store(time.Now().UnixNano())
		if s == &m.link {
			m.downs.Add(1)
			m.cfg.Logger.Warn("NATS link is down", "why", why)
			if m.cfg.OnChange != nil {
				m.cfg.OnChange(false)
			}
		} else {
			m.cfg.Logger.Warn("JetStream stream unavailable", "why", why)
		}
	}
}

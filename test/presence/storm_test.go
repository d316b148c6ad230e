package presence

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

// member is one raw client of a storm, keeping the view phoenix.js's
// Presence would: key -> phx_refs, replaced by each presence_state and
// patched by each presence_diff; and the last fabric:presence_count.
type member struct {
	c     *phxclient.Client
	mu    sync.Mutex
	view  map[string]map[string]bool
	count int
	err   error
	close int // close code, when the server closed the connection
}

type metaGroups map[string]struct {
	Metas []struct {
		Ref string `json:"phx_ref"`
	} `json:"metas"`
}

func (m *member) run() {
	for {
		msg, err := m.c.NextMatch(time.Hour, func(phxclient.Msg) bool { return true })
		if err != nil || msg.Close {
			m.mu.Lock()
			m.close = max(msg.CloseCode, 1)
			m.mu.Unlock()
			return
		}
		m.mu.Lock()
		switch msg.Event {
		case "presence_state":
			var g metaGroups
			if err := json.Unmarshal(msg.Payload, &g); err != nil {
				m.err = fmt.Errorf("state %.100s: %v", msg.Payload, err)
			}
			m.view = map[string]map[string]bool{}
			m.apply(g, true)
		case "presence_diff":
			var d struct{ Joins, Leaves metaGroups }
			if err := json.Unmarshal(msg.Payload, &d); err != nil {
				m.err = fmt.Errorf("diff %.100s: %v", msg.Payload, err)
			}
			if m.view == nil {
				m.err = fmt.Errorf("diff before state")
			}
			m.apply(d.Joins, true)
			m.apply(d.Leaves, false)
		case "fabric:presence_count":
			var c struct{ Count int }
			json.Unmarshal(msg.Payload, &c)
			m.count = c.Count
		}
		m.mu.Unlock()
	}
}

func (m *member) apply(g metaGroups, join bool) {
	for key, p := range g {
		for _, meta := range p.Metas {
			if join {
				if m.view[key] == nil {
					m.view[key] = map[string]bool{}
				}
				m.view[key][meta.Ref] = true
			} else if m.view[key] != nil {
				delete(m.view[key], meta.Ref)
				if len(m.view[key]) == 0 {
					delete(m.view, key)
				}
			}
		}
	}
}

// storm connects n raw clients and has them all join topic at once, then
// waits until ok holds for every one of them.
func storm(t *testing.T, cfg app.Config, topic string, n int, ok func(m *member) bool) {
	t.Helper()
	a, err := app.Start(cfg)
	if err != nil {
		t.Fatalf("start fabric: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	url := wsURL(a.HTTPAddr()) + "/websocket?vsn=2.0.0"
	ms := make([]*member, n)
	var msMu sync.Mutex // ms is filled while the heartbeats go
	t0 := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	for i := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// A loaded machine (-race) can have the server drop a
			// handshake that waited too long: dial again, as clients do.
			var c *phxclient.Client
			var err error
			for try := 0; try < 3; try++ {
				if c, err = phxclient.Dial(ctx, url, phoenix.V2, phxclient.Options{}); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				errs <- fmt.Errorf("dial %d: %w", i, err)
				return
			}
			t.Cleanup(func() { c.Close() })
			st, resp, err := c.JoinWait(topic, map[string]any{"user": fmt.Sprintf("u%d", i)}, 60*time.Second)
			if err != nil || st != "ok" {
				errs <- fmt.Errorf("join %d: %s %s %v", i, st, resp, err)
				return
			}
			m := &member{c: c}
			msMu.Lock()
			ms[i] = m
			msMu.Unlock()
			go m.run()
		}()
	}
	// Heartbeats, as phoenix.js sends them: a slow run must not idle out.
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			msMu.Lock()
			joined := append([]*member(nil), ms...)
			msMu.Unlock()
			for _, m := range joined {
				if m != nil {
					m.c.Send(phoenix.Null, phoenix.R(m.c.NextRef()), phoenix.TopicPhoenix, phoenix.EventHeartbeat, map[string]any{})
				}
			}
		}
	}()
	wg.Wait()
	t.Logf("%d clients joined in %v", n, time.Since(t0).Round(time.Millisecond))
	close(errs)
	for err := range errs {
		t.Fatalf("client: %v", err)
	}
	deadline := time.Now().Add(90 * time.Second)
	t1 := time.Now()
	defer func() { t.Logf("all %d converged in %v", n, time.Since(t1).Round(time.Millisecond)) }()
	for i := 0; i < n; {
		m := ms[i]
		m.mu.Lock()
		good, view, count, merr, closed := ok(m), len(m.view), m.count, m.err, m.close
		m.mu.Unlock()
		if merr != nil {
			t.Fatalf("client %d: %v", i, merr)
		}
		if closed != 0 {
			t.Fatalf("client %d: connection closed (%d)", i, closed)
		}
		if good {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("client %d of %d never converged: lists %d members, count %d", i, n, view, count)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func stormConfig(t *testing.T, ns namespace.Namespace) app.Config {
	return app.Config{
		Listen:     "127.0.0.1:0",
		OpsListen:  "off",
		NATSListen: "127.0.0.1:0",
		DataDir:    t.TempDir(),
		LeaveGrace: 50 * time.Millisecond,
		Namespaces: map[string]namespace.Namespace{"room": ns},
	}
}

// Under the member cap every client of a join storm ends up listing every
// member, however the joins were batched.
func TestStormFullList(t *testing.T) {
	// Under the default cap of 1,000 (kept well under it: each client
	// parses every state and diff, which -race makes slow).
	const n = 500
	cfg := stormConfig(t, namespace.Namespace{History: true, MaxAge: time.Hour, Presence: true})
	storm(t, cfg, "room:storm", n, func(m *member) bool { return len(m.view) == n && m.count == 0 })
}

// Over the cap every client lists nobody and counts everyone.
func TestStormOverCapCounts(t *testing.T) {
	const n = 1500 // half again the default cap of 1,000
	cfg := stormConfig(t, namespace.Namespace{History: true, MaxAge: time.Hour, Presence: true})
	storm(t, cfg, "room:storm", n, func(m *member) bool { return m.view != nil && len(m.view) == 0 && m.count == n })
}

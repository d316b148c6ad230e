package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/hub"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// labelValues lists the values label takes across fam's samples.
func labelValues(fam *dto.MetricFamily, label string) map[string]bool {
	vals := map[string]bool{}
	for _, m := range fam.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				vals[lp.GetValue()] = true
			}
		}
	}
	return vals
}

func TestMetrics(t *testing.T) {
	a, err := Start(Config{Listen: "127.0.0.1:0", OpsListen: "127.0.0.1:0", NATSListen: "off", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})

	// One WebSocket connection that ends, so a close code is recorded.
	c, _, _, err := ws.Dial(context.Background(), fmt.Sprintf("ws://%s/socket/websocket?vsn=2.0.0", a.HTTPAddr()))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	var fams map[string]*dto.MetricFamily
	for deadline := time.Now().Add(5 * time.Second); ; {
		fams = scrape(t, a.OpsAddr())
		if f := fams["fabric_connections_closed_total"]; f != nil && len(f.GetMetric()) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no fabric_connections_closed_total after a connection ended")
		}
		time.Sleep(20 * time.Millisecond)
	}

	G, C := dto.MetricType_GAUGE, dto.MetricType_COUNTER
	want := []struct {
		name   string
		typ    dto.MetricType
		label  string   // "" for an unlabeled metric
		values []string // label values that must be present
	}{
		{"fabric_build_info", G, "goversion", nil},
		{"fabric_connections", G, "transport", []string{"websocket", "longpoll"}},
		{"fabric_channels", G, "", nil},
		{"fabric_history_memory_bytes", G, "", nil},
		{"fabric_longpoll_sessions", G, "", nil},
		{"fabric_messages_delivered_total", C, "", nil},
		{"fabric_messages_replayed_total", C, "", nil},
		{"fabric_messages_unframeable_total", C, "", nil},
		{"fabric_messages_dropped_total", C, "reason", []string{"event_name", "nats_slow_consumer"}},
		{"fabric_connections_closed_total", C, "transport", []string{"websocket"}},
		{"fabric_connections_refused_total", C, "cause", []string{"origin", "overload", "per_ip", "auth", "auth_rate", "per_user"}},
		{"fabric_longpoll_sessions_total", C, "result", []string{"opened", "refused", "gone", "idle_expired", "overflow", "forbidden"}},
		{"fabric_nats_connected", G, "", nil},
		{"fabric_joins_total", C, "result", []string{"ok", "invalid", "unauthorized", "rate_limited", "too_many_channels", "user_budget", "error", "canceled"}},
		{"fabric_pushes_refused_total", C, "reason", []string{"reserved_event", "invalid_event", "too_large", "unauthorized", "rate_limited", "publish_failed", "invalid_reply"}},
		{"fabric_pushes_rate_limited_total", C, "limit", []string{"count", "bytes"}},
		{"fabric_resumes_total", C, "reason", []string{"", "epoch_changed", "history_gone", "offset_ahead"}},
		{"fabric_nats_subscriptions", G, "", nil},
		{"fabric_live_wildcard_namespaces", G, "", nil},
		{"fabric_messages_received_total", C, "", nil},
		{"fabric_fanout_latency_seconds", dto.MetricType_HISTOGRAM, "", nil},
		{"fabric_publish_requests_total", C, "code", []string{"200", "400", "401", "403", "413", "415", "503"}},
		{"fabric_draining", G, "", nil},
		{"go_goroutines", G, "", nil},
		{"process_cpu_seconds_total", C, "", nil},
	}
	for _, w := range want {
		fam := fams[w.name]
		if fam == nil {
			t.Errorf("%s missing", w.name)
			continue
		}
		if fam.GetType() != w.typ {
			t.Errorf("%s: type %v, want %v", w.name, fam.GetType(), w.typ)
		}
		if len(fam.GetMetric()) == 0 {
			t.Errorf("%s: no samples", w.name)
			continue
		}
		if w.label == "" {
			if n := len(fam.GetMetric()[0].GetLabel()); len(fam.GetMetric()) != 1 || n != 0 {
				t.Errorf("%s: want one unlabeled sample, got %v", w.name, fam.GetMetric())
			}
			continue
		}
		got := labelValues(fam, w.label)
		if len(got) == 0 {
			t.Errorf("%s: no %q label", w.name, w.label)
		}
		for _, v := range w.values {
			if !got[v] {
				t.Errorf("%s: no %s=%q (have %v)", w.name, w.label, v, got)
			}
		}
	}
	if v := fams["fabric_nats_connected"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("fabric_nats_connected = %v, want 1", v)
	}
	if v := fams["fabric_build_info"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Errorf("fabric_build_info = %v, want 1", v)
	}
	if got := labelValues(fams["fabric_build_info"], "version"); len(got) != 1 {
		t.Errorf("fabric_build_info: version label %v", got)
	}
}

const (
	metricsSecret = "a-metrics-test-hs256-secret-32-bytes"
	metricsAPIKey = "metrics-test-publish-key"
)

// sample is the value of name's sample whose labels include want (a
// counter or gauge value; a histogram's sample count), and whether there
// is one.
func sample(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		match := true
		for k, v := range want {
			if have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetricsMove drives every counted path once through a real gateway
// (JWT auth, embedded NATS, room:* persistent, chat:* ephemeral) and
// checks that each fabric_* metric exists with its type and moved.
func TestMetricsMove(t *testing.T) {
	a, err := Start(Config{Listen: "127.0.0.1:0", OpsListen: "127.0.0.1:0", NATSListen: "off", DataDir: t.TempDir(),
		JWTSecret: metricsSecret, AllowQueryToken: true, PublishAPIKeys: []string{metricsAPIKey},
		Compression: true, CompressionThreshold: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	tok, err := auth.Mint(auth.Config{Secret: []byte(metricsSecret)},
		auth.MintClaims{Subject: "ann", Channels: []string{"room:*", "chat:*"}, Publish: []string{"chat:*"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	dial := func() *phxclient.Client {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := phxclient.Dial(ctx, fmt.Sprintf("ws://%s/socket/websocket?vsn=2.0.0&token=%s", a.HTTPAddr(), tok), phoenix.V2, phxclient.Options{Deflate: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	join := func(c *phxclient.Client, topic string, params any, wantStatus string) json.RawMessage {
		t.Helper()
		status, resp, err := c.JoinWait(topic, params, 10*time.Second)
		if err != nil || status != wantStatus {
			t.Fatalf("join %s %v: %s %s %v, want %s", topic, params, status, resp, err, wantStatus)
		}
		return resp
	}
	receive := func(c *phxclient.Client, topic, event string) {
		t.Helper()
		if _, err := c.NextMatch(10*time.Second, func(m phxclient.Msg) bool { return m.Topic == topic && m.Event == event }); err != nil {
			t.Fatalf("no %s on %s: %v", event, topic, err)
		}
	}
	// await scrapes until cond holds, within a bounded deadline.
	await := func(what string, cond func(map[string]*dto.MetricFamily) bool) map[string]*dto.MetricFamily {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			fams := scrape(t, a.OpsAddr())
			if cond(fams) {
				return fams
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	fanouts := func(n float64) func(map[string]*dto.MetricFamily) bool {
		return func(f map[string]*dto.MetricFamily) bool {
			v, _ := sample(f, "fabric_fanout_latency_seconds", nil)
			return v >= n
		}
	}

	// A connection that ends, so fabric_connections_closed_total has a
	// sample.
	dial().Close()

	// A granted join of a persistent channel, and a refused one.
	c1 := dial()
	var pos struct {
		Epoch  string `json:"epoch"`
		Offset uint64 `json:"offset,string"`
	}
	if err := json.Unmarshal(join(c1, "room:m", nil, "ok"), &pos); err != nil || pos.Epoch == "" {
		t.Fatalf("room:m position %+v: %v", pos, err)
	}
	join(c1, "game:1", nil, "error")

	// A publish through the HTTP API: JetStream stores it and its
	// republished copy carries Nats-Time-Stamp.
	apiPublish(t, a, `{"topic":"room:m","event":"new_msg","payload":"e30="}`)
	receive(c1, "room:m", "new_msg")
	await("the stored message's fan-out observed", fanouts(1))

	// A broadcast of a client push on an ephemeral channel: the gateway's
	// own core publish carries Fabric-Time.
	join(c1, "chat:m", nil, "ok")
	ref := c1.NextRef()
	if err := c1.Send(phoenix.Null, phoenix.R(ref), "chat:m", "shout", map[string]string{"body": "hi"}); err != nil {
		t.Fatal(err)
	}
	if status, resp, err := c1.WaitReply(ref, 10*time.Second); err != nil || status != "ok" {
		t.Fatalf("push: %s %s %v", status, resp, err)
	}
	receive(c1, "chat:m", "shout")
	await("the gateway's core publish's fan-out observed", fanouts(2))
	// A compressed push over the compression threshold, broadcast back
	// compressed: fabric_compression_bytes_total for chat (not configured: *).
	long := phoenix.AppendMessage(nil, phoenix.V2, phoenix.Null, phoenix.R(c1.NextRef()), "chat:m", "shout",
		[]byte(`{"body":"`+strings.Repeat("compressible ", 40)+`"}`))
	if err := c1.WriteCompressed(ws.OpText, long); err != nil {
		t.Fatal(err)
	}
	receive(c1, "chat:m", "shout")
	if _, z, _ := c1.ReadStats(); z == 0 {
		t.Fatal("no message arrived compressed")
	}
	await("the gateway's compressed fan-out observed", fanouts(3))

	// A broadcast with the publisher library (core NATS for chat:*):
	// Fabric-Time set by the library.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err = a.pub.Broadcast(ctx, []string{"chat:m", "chat:elsewhere"}, "news", []byte(`{}`))
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	receive(c1, "chat:m", "news")
	await("the library's core publish's fan-out observed", fanouts(4))

	// Resumes on a second connection: from the position before the
	// publish (recovered, the message replayed), and from an unknown epoch.
	c2 := dial()
	if r := join(c2, "room:m", pos, "ok"); !strings.Contains(string(r), `"recovered":true`) {
		t.Fatalf("resume: %s", r)
	}
	receive(c2, "room:m", "new_msg")
	if r := join(c2, "room:n", map[string]any{"epoch": "gone", "offset": 1}, "ok"); !strings.Contains(string(r), `"reason":"epoch_changed"`) {
		t.Fatalf("resume from another epoch: %s", r)
	}

	// Joins and resumes are counted before their replies go out; the wait
	// is for the closed connection, which its event loop counts later.
	counted := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"fabric_joins_total", map[string]string{"result": "ok"}, 4},
		{"fabric_joins_total", map[string]string{"result": "unauthorized"}, 1},
		{"fabric_resumes_total", map[string]string{"recovered": "true", "reason": ""}, 1},
		{"fabric_resumes_total", map[string]string{"recovered": "false", "reason": "epoch_changed"}, 1},
	}
	fams := await("join, resume and close counters", func(f map[string]*dto.MetricFamily) bool {
		if len(f["fabric_connections_closed_total"].GetMetric()) == 0 {
			return false
		}
		for _, c := range counted {
			if v, _ := sample(f, c.name, c.labels); v < c.min {
				return false
			}
		}
		return true
	})

	// Every fabric_* metric, old and new, with its type.
	G, C, H := dto.MetricType_GAUGE, dto.MetricType_COUNTER, dto.MetricType_HISTOGRAM
	types := map[string]dto.MetricType{
		"fabric_build_info": G, "fabric_connections": G, "fabric_channels": G, "fabric_history_memory_bytes": G,
		"fabric_longpoll_sessions": G, "fabric_messages_delivered_total": C,
		"fabric_messages_replayed_total": C, "fabric_messages_unframeable_total": C,
		"fabric_messages_dropped_total": C, "fabric_connections_closed_total": C,
		"fabric_connections_refused_total": C, "fabric_longpoll_sessions_total": C,
		"fabric_nats_connected": G, "fabric_joins_total": C, "fabric_pushes_refused_total": C, "fabric_resumes_total": C, "fabric_pushes_rate_limited_total": C,
		"fabric_nats_subscriptions": G, "fabric_messages_received_total": C, "fabric_live_wildcard_namespaces": G,
		"fabric_fanout_latency_seconds": H, "fabric_publish_requests_total": C,
		"fabric_draining": G, "fabric_lifecycle_events_dropped_total": C,
		"fabric_nats_probes_total": C, "fabric_nats_link_down_total": C,
		"fabric_compression_bytes_total": C,
		// Moved by test/e2e/outbudget_test.go and test/attack (stalled
		// clients over --max-output-bytes).
		"fabric_output_queued_bytes": G, "fabric_output_budget_cuts_total": C,
	}
	for name, typ := range types {
		if f := fams[name]; f == nil || f.GetType() != typ || len(f.GetMetric()) == 0 {
			t.Errorf("%s: %v, want type %v with samples", name, f, typ)
		}
	}
	for name := range fams {
		if _, ok := types[name]; strings.HasPrefix(name, "fabric_") && !ok {
			t.Errorf("%s is not checked by this test", name)
		}
	}

	// And each new one moved (or reads what it should).
	moved := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"fabric_publish_requests_total", map[string]string{"code": "200"}, 1},
		{"fabric_messages_received_total", nil, 3},
		{"fabric_messages_delivered_total", nil, 3},
		{"fabric_messages_replayed_total", nil, 1},
		{"fabric_fanout_latency_seconds", nil, 3},
		{"fabric_nats_subscriptions", nil, 3}, // room:m, room:n, chat:m at least
		{"fabric_channels", nil, 3},
		{"fabric_nats_connected", nil, 1},
		{"fabric_compression_bytes_total", map[string]string{"namespace": "*", "stage": "before"}, 500},
		{"fabric_compression_bytes_total", map[string]string{"namespace": "*", "stage": "after"}, 1},
	}
	for _, m := range moved {
		if v, ok := sample(fams, m.name, m.labels); !ok || v < m.min {
			t.Errorf("%s%v = %v (present %v), want ≥ %v", m.name, m.labels, v, ok, m.min)
		}
	}
	zin, _ := sample(fams, "fabric_compression_bytes_total", map[string]string{"namespace": "*", "stage": "before"})
	zout, _ := sample(fams, "fabric_compression_bytes_total", map[string]string{"namespace": "*", "stage": "after"})
	if zout >= zin/2 {
		t.Errorf("compressed %v bytes into %v, want under half", zin, zout)
	}
	for _, fixed := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"fabric_joins_total", map[string]string{"result": "ok"}, 4},
		{"fabric_joins_total", map[string]string{"result": "unauthorized"}, 1},
		{"fabric_joins_total", map[string]string{"result": "error"}, 0},
		{"fabric_resumes_total", map[string]string{"recovered": "false", "reason": "history_gone"}, 0},
		{"fabric_draining", nil, 0},
	} {
		if v, ok := sample(fams, fixed.name, fixed.labels); !ok || v != fixed.want {
			t.Errorf("%s%v = %v (present %v), want %v", fixed.name, fixed.labels, v, ok, fixed.want)
		}
	}
	// Units: seconds, so a latency summed over three messages is far below
	// an hour (a nanosecond/second mix-up would not be). Not a timing bound.
	h := fams["fabric_fanout_latency_seconds"].GetMetric()[0].GetHistogram()
	if s := h.GetSampleSum(); s < 0 || s > 3600 {
		t.Errorf("fabric_fanout_latency_seconds sum = %v", s)
	}
	// The parser lists the +Inf bucket too.
	if b := h.GetBucket(); len(b) != len(hub.FanoutBuckets)+1 || b[0].GetUpperBound() != 0.001 || b[len(b)-2].GetUpperBound() != 10 {
		t.Errorf("fabric_fanout_latency_seconds buckets %v", b)
	}

	// fabric_draining follows the shutdown flag (which Shutdown sets
	// first; a real drain is too short-lived to scrape reliably).
	a.stopped.Store(true)
	v, _ := sample(scrape(t, a.OpsAddr()), "fabric_draining", nil)
	a.stopped.Store(false)
	if v != 1 {
		t.Errorf("fabric_draining = %v during shutdown, want 1", v)
	}
}

// apiPublish posts one JSON publish request to a's HTTP API with the test
// key and fails t unless it is accepted.
func apiPublish(t *testing.T, a *App, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.HTTPAddr()+"/api/v1/publish", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+metricsAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publish: %s", resp.Status)
	}
}

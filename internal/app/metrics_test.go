package app

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/gobwas/ws"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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
		{"fabric_longpoll_sessions", G, "", nil},
		{"fabric_messages_delivered_total", C, "", nil},
		{"fabric_messages_replayed_total", C, "", nil},
		{"fabric_messages_unframeable_total", C, "", nil},
		{"fabric_messages_dropped_total", C, "reason", []string{"event_name", "nats_slow_consumer"}},
		{"fabric_connections_closed_total", C, "transport", []string{"websocket"}},
		{"fabric_connections_refused_total", C, "cause", []string{"origin", "overload", "per_ip", "auth"}},
		{"fabric_longpoll_sessions_total", C, "result", []string{"opened", "refused", "gone", "idle_expired", "overflow"}},
		{"fabric_nats_connected", G, "", nil},
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

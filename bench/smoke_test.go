package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/internal/testkit/proctest"
)

// jsonFields round-trips v through JSON (the result line) and returns it
// as a generic object.
func jsonFields(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFanoutSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts server and client processes")
	}
	t.Parallel()
	fabricBin := proctest.FabricBinary(t)
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Fanout(ctx, FanoutOptions{
		Exe: fabricBin, ExeEnv: proctest.Env(),
		N: 200, Workers: 1, Rate: 10, Duration: time.Second, Saturate: true,
		Timeout: 50 * time.Second, Log: &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(res.Systems) != 2 || res.Systems[0].System != SystemFabric || res.Systems[1].System != SystemNATSWS {
		t.Fatalf("systems = %+v", res.Systems)
	}
	for _, s := range res.Systems {
		if s.N != 200 || s.RSSBefore <= 0 || s.RSS <= 0 || s.RSSEnd <= 0 || s.ClientsLost != 0 {
			t.Errorf("%s: %+v", s.System, s)
		}
		for name, ph := range map[string]*FanoutPhase{"rate": s.Rate, "saturate": s.Saturate} {
			if ph == nil {
				t.Errorf("%s: no %s phase", s.System, name)
				continue
			}
			if ph.Published <= 0 || ph.Expected != ph.Published*200 || ph.Delivered != ph.Expected || ph.DeliveredRatio != 1 {
				t.Errorf("%s %s: published %d, expected %d, delivered %d", s.System, name, ph.Published, ph.Expected, ph.Delivered)
			}
			if ph.DeliveriesPerS <= 0 || ph.ElapsedS <= 0 || ph.ServerCPUS < 0 || ph.ServerCPUPerDelivery < 0 {
				t.Errorf("%s %s: %+v", s.System, name, ph)
			}
			if l := ph.Latency; l.P50 < 0 || l.P99 < l.P50 || l.P999 < l.P99 || l.Max < l.P999 {
				t.Errorf("%s %s: latency %+v", s.System, name, l)
			}
		}
		if s.Rate != nil && s.Rate.Published != 10 {
			t.Errorf("%s: rate phase published %d, want 10 (10 msg/s for 1 s)", s.System, s.Rate.Published)
		}
	}
	m := jsonFields(t, res)
	for _, k := range []string{"bench", "n", "rate", "duration_s", "payload_bytes", "subject", "systems", "ratios"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON result has no %q: %v", k, m)
		}
	}
	if m["subject"] != "fabric.room.fanout" { // the default configuration
		t.Errorf("subject = %v", m["subject"])
	}
	sys := m["systems"].([]any)[0].(map[string]any)
	for _, k := range []string{"rss_per_conn_bytes", "rate", "saturate", "clients_lost"} {
		if _, ok := sys[k]; !ok {
			t.Errorf("JSON system has no %q: %v", k, sys)
		}
	}
	t.Logf("%s", log.String())
}

func TestStormSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts server and client processes")
	}
	t.Parallel()
	fabricBin := proctest.FabricBinary(t)
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Storm(ctx, StormOptions{
		Exe: fabricBin, ExeEnv: proctest.Env(),
		N: 200, Workers: 1, Concurrency: 100, Timeout: 50 * time.Second, Log: &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(res.Systems) != 2 {
		t.Fatalf("systems = %+v", res.Systems)
	}
	for _, s := range res.Systems {
		if s.N != 200 || s.Joined != 200 || s.Failed != 0 || s.DialErrors != 0 || s.ClientsLost != 0 {
			t.Errorf("%s: %+v", s.System, s)
		}
		if s.AllJoinedS <= 0 || s.ConnsPerS <= 0 || s.RSS <= 0 || s.JoinLatency.Max < s.JoinLatency.P50 {
			t.Errorf("%s: %+v", s.System, s)
		}
	}
	if res.Failures() != 0 {
		t.Errorf("failures = %d", res.Failures())
	}
	m := jsonFields(t, res)
	if m["bench"] != "storm" || m["n"] != float64(200) {
		t.Errorf("JSON result: %v", m)
	}
	t.Logf("%s", log.String())
}

// The floor delivers every payload to every client, one write each.
func TestFanoutFloorSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts server and client processes")
	}
	t.Parallel()
	fabricBin := proctest.FabricBinary(t)
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Fanout(ctx, FanoutOptions{
		Exe: fabricBin, ExeEnv: proctest.Env(), Systems: []string{SystemFloor},
		N: 100, Workers: 1, Rate: 10, Duration: time.Second, Timeout: 50 * time.Second, Log: &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	s := res.Systems[0]
	if s.System != SystemFloor || s.Rate == nil || s.Rate.Published != 10 || s.Rate.Delivered != 1000 || s.ClientsLost != 0 {
		t.Fatalf("%+v %+v\n%s", s, s.Rate, log.String())
	}
}

// Every client resumes through a real socket and gets exactly what it
// missed, then live messages.
func TestResumeSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts server and client processes")
	}
	t.Parallel()
	fabricBin := proctest.FabricBinary(t)
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	res, err := Resume(ctx, ResumeOptions{
		Exe: fabricBin, ExeEnv: proctest.Env(),
		N: 200, Workers: 1, Concurrency: 100, Missed: 5, Timeout: 80 * time.Second, Log: &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if res.Recovered != 200 || res.NotRecovered != 0 || res.Failed != 0 || res.LiveDelivered != 200 || res.Channels != 100 {
		t.Fatalf("%+v\n%s", res, log.String())
	}
	if res.RecoveredS <= 0 || res.PeakRSS <= 0 || res.ServerCPUS < 0 || res.RecoveredP50S <= 0 || res.RecoveredP99S < res.RecoveredP50S {
		t.Errorf("%+v", res)
	}
}

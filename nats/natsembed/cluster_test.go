package natsembed_test

import (
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/nats/natsembed"
)

func TestClusterConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  natsembed.Config
		want string
	}{
		{natsembed.Config{Port: -1, ClusterListen: "127.0.0.1:-1"}, "need ClusterName"},
		{natsembed.Config{Port: -1, Routes: []string{"nats-route://127.0.0.1:1"}}, "need ClusterName"},
		{natsembed.Config{Port: -1, ClusterName: "c"}, "needs ClusterListen"},
		{natsembed.Config{Port: -1, ClusterName: "a.b", ClusterListen: "127.0.0.1:-1"}, "bad cluster name"},
		{natsembed.Config{Port: -1, ClusterName: "c", ClusterListen: "127.0.0.1"}, "cluster listen"},
		{natsembed.Config{Port: -1, ClusterName: "c", ClusterListen: "127.0.0.1:-1", Routes: []string{"http://x:1"}}, "bad route scheme"},
		{natsembed.Config{Port: -1, ClusterName: "c", ClusterListen: "127.0.0.1:-1", Routes: []string{"nats-route://x"}}, "bad route"},
	} {
		s, err := natsembed.Start(tc.cfg)
		if err == nil {
			s.Shutdown()
			t.Errorf("%+v started", tc.cfg)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// A core-NATS cluster node (no JetStream) needs no routes to start; its
// default name carries a suffix, and its route URL is reported.
func TestClusterNodeWithoutJetStream(t *testing.T) {
	s := start(t, natsembed.Config{Port: -1, ClusterName: "c", ClusterListen: "127.0.0.1:0"})
	if u := s.ClusterURL(); !strings.HasPrefix(u, "nats-route://127.0.0.1:") || strings.HasSuffix(u, ":0") {
		t.Fatalf("ClusterURL = %q", u)
	}
	if n := s.NATS().Name(); !strings.HasPrefix(n, "fabric-") || strings.Count(n, "-") < 2 {
		t.Fatalf("default clustered server name %q", n)
	}
	if u := start(t, natsembed.Config{Port: -1}).ClusterURL(); u != "" {
		t.Fatalf("standalone ClusterURL = %q", u)
	}
}

func TestParseSyncInterval(t *testing.T) {
	for in, want := range map[string]time.Duration{"": 0, "always": natsembed.SyncAlways, "ALWAYS": natsembed.SyncAlways, "30s": 30 * time.Second} {
		if got, err := natsembed.ParseSyncInterval(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"often", "-1s"} {
		if _, err := natsembed.ParseSyncInterval(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

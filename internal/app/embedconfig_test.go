package app

import (
	"log/slog"
	"strings"
	"testing"
)

// A cluster member without a client port would start no route listener
// either (nats-server opens none with DontListen): refused with the fix,
// rather than a cluster that silently never forms.
func TestClusterNeedsNATSListen(t *testing.T) {
	for _, listen := range []string{"off", ""} {
		_, err := embedConfig(Config{ClusterName: "c", ClusterListen: "127.0.0.1:6222", NATSListen: listen, DataDir: t.TempDir()}, slog.Default())
		if err == nil || !strings.Contains(err.Error(), "--nats-listen") {
			t.Fatalf("--nats-listen=%q with --cluster-name: %v", listen, err)
		}
	}
	if _, err := embedConfig(Config{ClusterName: "c", ClusterListen: "127.0.0.1:6222", NATSListen: "127.0.0.1:4222", DataDir: t.TempDir()}, slog.Default()); err != nil {
		t.Fatalf("loopback client port: %v", err)
	}
	if _, err := embedConfig(Config{NATSListen: "off", DataDir: t.TempDir()}, slog.Default()); err != nil {
		t.Fatalf("no cluster, no port: %v", err)
	}
}

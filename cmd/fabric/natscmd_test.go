package main

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/nats/natsembed"
)

func TestNATSCommandRunsUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- natsCmd(ctx, []string{"--listen", "127.0.0.1:0", "--store-dir", t.TempDir(), "--name", "n1",
			"--sync-interval", "always", "--log-level", "error"}, pw, io.Discard)
		pw.Close()
	}()
	lines := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(pr).ReadString('\n')
		lines <- l
		io.Copy(io.Discard, pr)
	}()
	var line string
	select {
	case line = <-lines:
	case err := <-done:
		t.Fatalf("nats exited early: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("nats did not start")
	}
	i := strings.Index(line, "nats://")
	if !strings.HasPrefix(line, "NATS n1 is running: ") || i < 0 {
		t.Fatalf("banner %q", line)
	}
	url := strings.Fields(line[i:])[0]
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	actx, acancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer acancel()
	if _, err := js.AccountInfo(actx); err != nil {
		t.Fatalf("JetStream not enabled: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("nats did not stop")
	}
}

func TestNATSCommandFlags(t *testing.T) {
	parse := func(args ...string) (natsembed.Config, error) {
		var o natsOptions
		fs := natsFlags(&o)
		fs.SetOutput(io.Discard)
		if err := fs.Parse(args); err != nil {
			return natsembed.Config{}, err
		}
		return o.embedConfig()
	}
	cfg, err := parse("--cluster-name", "c", "--cluster-listen", "0.0.0.0:6222",
		"--routes", "nats-route://a:6222, nats-route://b:6222", "--routes", "nats-route://c:6222",
		"--listen", ":4222", "--sync-interval", "1s")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClusterName != "c" || cfg.ClusterListen != "0.0.0.0:6222" || len(cfg.Routes) != 3 ||
		cfg.Host != "0.0.0.0" || cfg.Port != 4222 || cfg.SyncInterval != time.Second || !cfg.JetStream || cfg.StoreDir == "" {
		t.Fatalf("config %+v", cfg)
	}
	if cfg, _ := parse("--sync-interval", "always"); cfg.SyncInterval != natsembed.SyncAlways {
		t.Fatalf("always: %v", cfg.SyncInterval)
	}
	if cfg, _ := parse("--jetstream=false"); cfg.JetStream || cfg.StoreDir != "" || cfg.ClusterListen != "" {
		t.Fatalf("no jetstream: %+v", cfg)
	}
	for _, bad := range [][]string{
		{"--routes", "nats-route://a:6222"}, // routes without a cluster
		{"--sync-interval", "often"},
		{"--listen", "nohostport"},
	} {
		if _, err := parse(bad...); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

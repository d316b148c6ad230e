package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	fbench "github.com/fabric-rt/fabric/internal/bench"
)

const benchUsage = `Usage:
  fabric bench idle [flags]   bytes of server RSS per idle joined connection,
                              Fabric vs nats-server's WebSocket listener

Run "fabric bench idle -h" for its flags.
`

// bench runs `fabric bench SUBCOMMAND`. Besides idle, it has two hidden
// subcommands the benchmark starts as child processes: nats-ws-server (the
// baseline system) and clients (a load-generator worker).
func bench(args, environ []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return fmt.Errorf("bench: missing subcommand")
	}
	switch args[0] {
	case "idle":
		return benchIdle(ctx, args[1:], environ, stdout, stderr)
	case "nats-ws-server":
		fs := flag.NewFlagSet("fabric bench nats-ws-server", flag.ContinueOnError)
		fs.SetOutput(stderr)
		host := fs.String("host", "127.0.0.1", "WebSocket listen host")
		port := fs.Int("port", 0, "WebSocket listen port")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *port <= 0 {
			return fmt.Errorf("bench nats-ws-server: --port is required")
		}
		return fbench.RunNATSWSServer(ctx, *host, *port, stdout)
	case "clients":
		var o fbench.ClientOptions
		fs := flag.NewFlagSet("fabric bench clients", flag.ContinueOnError)
		fs.SetOutput(stderr)
		fs.StringVar(&o.Target, "target", "", "ws:// URL")
		fs.IntVar(&o.N, "n", 1000, "connections (keep ≤ 5000 per process)")
		fs.IntVar(&o.Offset, "offset", 0, "index of the first connection (spreads topics)")
		fs.StringVar(&o.Source, "source", "127.0.0.2", "loopback source address")
		fs.StringVar(&o.Mode, "mode", fbench.ModePhoenix, "phoenix or nats-ws")
		fs.IntVar(&o.Concurrency, "concurrency", 50, "dials in flight")
		fs.DurationVar(&o.HeartbeatEvery, "heartbeat", 30*time.Second, "phoenix heartbeat period per connection")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if o.Target == "" {
			return fmt.Errorf("bench clients: --target is required")
		}
		return fbench.RunClients(ctx, o, stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, benchUsage)
		return nil
	}
	fmt.Fprint(stderr, benchUsage)
	return fmt.Errorf("bench: unknown subcommand %q", args[0])
}

func benchIdle(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	// Children run with the default configuration: FABRIC_* settings of
	// this shell (e.g. FABRIC_NATS_URL) would change the system under test.
	o := fbench.IdleOptions{Log: stderr}
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "FABRIC_") {
			o.ExeEnv = append(o.ExeEnv, kv)
		}
	}
	var out, systems string
	fs := flag.NewFlagSet("fabric bench idle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.N, "n", 15000, "idle joined connections per system")
	fs.IntVar(&o.Workers, "workers", 3, "client worker processes (each ≤ 5000 connections, own source address 127.0.0.2, .3, …)")
	fs.DurationVar(&o.Settle, "settle", 10*time.Second, "wait before each RSS reading (no clients; all clients joined)")
	fs.IntVar(&o.Samples, "samples", 3, "VmRSS samples, 1 s apart, per reading; the minimum is kept")
	fs.DurationVar(&o.Timeout, "timeout", 3*time.Minute, "abort the whole run after this long")
	fs.StringVar(&systems, "systems", "fabric,nats-ws", "systems to measure, in order")
	fs.StringVar(&out, "out", "", "also write the report to this file, command line first")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench idle: unexpected arguments %q", fs.Args())
	}
	o.Systems = splitList(systems)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.Exe = exe
	loadStart := loadavg()
	started := time.Now()
	res, err := fbench.IdleBench(ctx, o)
	if err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "$ fabric bench idle %s\n", strings.Join(args, " "))
	fmt.Fprintf(&b, "# %s, %s, %s/%s, %d CPUs, version %s\n", started.UTC().Format(time.RFC3339), runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), versionString())
	fmt.Fprintf(&b, "# loadavg start %s, end %s\n", loadStart, loadavg())
	fmt.Fprintf(&b, "# server VmRSS before clients (after %s settle) and with N joined idle clients (after %s settle), min of %d samples\n", o.Settle, o.Settle, o.Samples)
	fmt.Fprintf(&b, "%-8s %6s %14s %14s %10s %10s %9s\n", "system", "N", "rss_before_B", "rss_after_B", "B/conn", "KiB/conn", "join_s")
	for _, r := range res {
		fmt.Fprintf(&b, "%-8s %6d %14d %14d %10.0f %10.2f %9.1f\n", r.System, r.N, r.RSSBefore, r.RSSAfter, r.BytesPerConn(), r.BytesPerConn()/1024, r.JoinTime.Seconds())
	}
	if len(res) == 2 && res[1].BytesPerConn() > 0 {
		fmt.Fprintf(&b, "ratio %s/%s: %.3f\n", res[0].System, res[1].System, res[0].BytesPerConn()/res[1].BytesPerConn())
	}
	fmt.Fprint(stdout, b.String())
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, []byte(b.String()), 0o644)
	}
	return nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

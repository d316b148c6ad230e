package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	fbench "github.com/fabric-rt/fabric/bench"
	"github.com/fabric-rt/fabric/internal/config"
)

const benchUsage = `Usage:
  fabric bench idle [flags]   bytes of server RSS per idle joined connection,
                              Fabric vs nats-server's WebSocket listener
  fabric bench fanout [flags] one channel, N subscribers, NATS publisher:
                              deliveries/s, latency, server CPU per delivery
  fabric bench storm [flags]  N clients connect and join at once
  fabric bench resume [flags] N clients of 100 room:* channels drop, miss
                              messages, and all resume at once
  fabric bench plot --in FILE.jsonl --out FILE.png
                              memory/conn and deliveries/s against N

Run "fabric bench SUBCOMMAND -h" for its flags.
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
	case "fanout":
		return benchFanout(ctx, args[1:], environ, stdout, stderr)
	case "storm":
		return benchStorm(ctx, args[1:], environ, stdout, stderr)
	case "resume":
		return benchResume(ctx, args[1:], environ, stdout, stderr)
	case "plot":
		return benchPlot(args[1:], stdout, stderr)
	case "nats-ws-server":
		fs := flag.NewFlagSet("fabric bench nats-ws-server", flag.ContinueOnError)
		fs.SetOutput(stderr)
		host := fs.String("host", "127.0.0.1", "WebSocket listen host")
		port := fs.Int("port", 0, "WebSocket listen port")
		natsPort := fs.Int("nats-port", 0, "also listen for NATS clients on this port (0: no)")
		if err := config.ParseFlags(fs, args[1:]); err != nil {
			return err
		}
		if *port <= 0 {
			return fmt.Errorf("bench nats-ws-server: --port is required")
		}
		return fbench.RunNATSWSServer(ctx, *host, *port, *natsPort, stdout)
	case "floor-server":
		fs := flag.NewFlagSet("fabric bench floor-server", flag.ContinueOnError)
		fs.SetOutput(stderr)
		host := fs.String("host", "127.0.0.1", "listen host")
		port := fs.Int("port", 0, "WebSocket listen port")
		feedPort := fs.Int("feed-port", 0, "payload feed port (one payload a line)")
		if err := config.ParseFlags(fs, args[1:]); err != nil {
			return err
		}
		if *port <= 0 || *feedPort <= 0 {
			return fmt.Errorf("bench floor-server: --port and --feed-port are required")
		}
		return fbench.RunFloorServer(ctx, *host, *port, *feedPort, stdout)
	case "clients":
		var o fbench.ClientOptions
		fs := flag.NewFlagSet("fabric bench clients", flag.ContinueOnError)
		fs.SetOutput(stderr)
		fs.StringVar(&o.Target, "target", "", "ws:// URL")
		fs.IntVar(&o.N, "n", 1000, "connections (keep ≤ 5000 per process)")
		fs.IntVar(&o.Offset, "offset", 0, "index of the first connection (spreads topics)")
		fs.StringVar(&o.Source, "source", "127.0.0.2", "loopback source address")
		fs.StringVar(&o.Mode, "mode", fbench.ModePhoenix, "phoenix, nats-ws or centrifugo")
		fs.IntVar(&o.Concurrency, "concurrency", 50, "dials in flight")
		fs.DurationVar(&o.HeartbeatEvery, "heartbeat", 30*time.Second, "phoenix heartbeat period per connection")
		fs.StringVar(&o.Topic, "topic", "", `topic (phoenix) or subject (nats-ws) to join, "%d" = index mod 100, "%i" = index (default room:bench-%d, fabric.room.bench-%d)`)
		fs.IntVar(&o.Retries, "retries", 2, "extra dial attempts per connection")
		fs.DurationVar(&o.StatusEvery, "status-every", time.Second, "period of status reports (deliveries, losses)")
		fs.BoolVar(&o.Deflate, "deflate", false, "offer permessage-deflate and inflate compressed messages")
		fs.IntVar(&o.ResumeWant, "resume-want", 0, `> 0: keep each join's position and obey "drop" and "resume" on the control input, a resume counting as recovered once this many messages arrived`)
		control := fs.Bool("control", false, `read commands ("stats") from stdin; exit at its end`)
		if err := config.ParseFlags(fs, args[1:]); err != nil {
			return err
		}
		if *control {
			o.Control = os.Stdin
		}
		o.Resume = o.ResumeWant > 0
		if o.Target == "" {
			return fmt.Errorf("bench clients: --target is required")
		}
		return fbench.RunClients(ctx, o, stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, benchUsage)
		return nil
	}
	fmt.Fprint(stderr, benchUsage)
	if c := config.Suggest(args[0], []string{"idle", "fanout", "storm", "resume", "plot"}); c != "" {
		return fmt.Errorf("bench: unknown subcommand %q (did you mean %q?)", args[0], c)
	}
	return fmt.Errorf("bench: unknown subcommand %q", args[0])
}

func benchIdle(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	// Children run with the default configuration: FABRIC_* settings of
	// this shell (e.g. FABRIC_NATS_URL) would change the system under test.
	o := fbench.IdleOptions{Log: stderr, ExeEnv: childEnv(environ)}
	var out, systems string
	fs := flag.NewFlagSet("fabric bench idle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.N, "n", 15000, "idle joined connections per system")
	fs.IntVar(&o.Workers, "workers", 3, "client worker processes (each ≤ 5000 connections, own source address 127.0.0.2, .3, …)")
	fs.DurationVar(&o.Settle, "settle", 10*time.Second, "wait before each RSS reading (no clients; all clients joined)")
	fs.IntVar(&o.Samples, "samples", 3, "VmRSS samples, 1 s apart, per reading; the minimum is kept")
	fs.DurationVar(&o.Timeout, "timeout", 3*time.Minute, "abort the whole run after this long")
	fs.StringVar(&systems, "systems", "fabric,nats-ws", "systems to measure, in order (fabric-deflate: fabric --compression, clients offering permessage-deflate; centrifugo-deflate: centrifugo with websocket.compression, the same clients); fabric@/path/to/fabric is another build of fabric serve (before/after a change in one run)")
	var baseline string
	fs.StringVar(&baseline, "baseline", "", baselineUsage)
	fs.Func("fabric-flags", "extra flags for fabric serve, space-separated", func(v string) error {
		o.FabricFlags = append(o.FabricFlags, strings.Fields(v)...)
		return nil
	})
	fs.StringVar(&o.Topic, "topic", fbench.DefaultIdleTopic, `channel each Fabric client joins ("%d" = index mod 100, "%i" = index: a channel per client, e.g. room:u%i); nats-ws clients subscribe to its subject. room:… is the default configuration (history and presence); bench:… has neither (like a NATS SUB); several comma-separated: each system is measured once per topic, ratios in the same run`)
	ephemeral := fs.Bool("ephemeral", false, "join "+fbench.EphemeralIdleTopic+" instead of the default configuration's "+fbench.DefaultIdleTopic+" (overrides --topic)")
	fs.StringVar(&out, "out", "", "also write the report to this file, command line first")
	if err := config.ParseFlags(fs, args); err != nil {
		return err
	}
	if *ephemeral {
		o.Topic = fbench.EphemeralIdleTopic
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench idle: unexpected arguments %q", fs.Args())
	}
	o.Systems = systemsOf(systems, baseline)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.Exe = exe
	loadStart := loadavg()
	started := time.Now()
	// Several topics (comma-separated): each system is measured once per
	// topic, and each system's ratios are first topic / the others.
	var res []fbench.IdleResult
	topics := splitList(o.Topic)
	if len(topics) == 0 {
		topics = []string{fbench.DefaultIdleTopic}
	}
	for _, topic := range topics {
		o.Topic = topic
		r, err := fbench.IdleBench(ctx, o)
		if err != nil {
			return err
		}
		res = append(res, r...)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "$ fabric bench idle %s\n", strings.Join(args, " "))
	fmt.Fprintf(&b, "# %s, %s, %s/%s, %d CPUs, version %s\n", started.UTC().Format(time.RFC3339), runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), versionString())
	fmt.Fprintf(&b, "# loadavg start %s, end %s\n", loadStart, loadavg())
	fmt.Fprintf(&b, "# clients join the topic shown (nats-ws clients subscribe to its subject; centrifugo clients to the same channel name)\n")
	if len(o.FabricFlags) > 0 {
		fmt.Fprintf(&b, "# fabric serve extra flags: %s\n", strings.Join(o.FabricFlags, " "))
	}
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		if x := os.Getenv(v); x != "" {
			fmt.Fprintf(&b, "# %s=%s in the environment (both servers inherit it)\n", v, x)
		}
	}
	fmt.Fprintf(&b, "# server VmRSS before clients (after %s settle) and with N joined idle clients (after %s settle), min of %d samples\n", o.Settle, o.Settle, o.Samples)
	fmt.Fprintf(&b, "%-10s %-16s %6s %14s %14s %10s %10s %9s\n", "system", "topic", "N", "rss_before_B", "rss_after_B", "B/conn", "KiB/conn", "join_s")
	for _, r := range res {
		fmt.Fprintf(&b, "%-10s %-16s %6d %14d %14d %10.0f %10.2f %9.1f\n", r.System, r.Topic, r.N, r.RSSBefore, r.RSSAfter, r.BytesPerConn(), r.BytesPerConn()/1024, r.JoinTime.Seconds())
	}
	for i, r := range res {
		for _, q := range res[i+1:] {
			if q.BytesPerConn() > 0 && (q.Topic == r.Topic && r.System == res[0].System || q.System == r.System && r.Topic == res[0].Topic) {
				fmt.Fprintf(&b, "ratio %s %s / %s %s: B/conn %.3f, join time %.3f\n", r.System, r.Topic, q.System, q.Topic, r.BytesPerConn()/q.BytesPerConn(), r.JoinTime.Seconds()/q.JoinTime.Seconds())
			}
		}
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

// childEnv is the environment for benchmark children: without FABRIC_*
// settings of this shell (e.g. FABRIC_NATS_URL), which would change the
// system under test.
func childEnv(environ []string) []string {
	var env []string
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "FABRIC_") {
			env = append(env, kv)
		}
	}
	return env
}

// benchHeader is the first lines of a report file: the command, then the
// machine and the load.
func benchHeader(name string, args []string, started time.Time, loadStart, loadEnd string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "$ fabric bench %s %s\n", name, strings.Join(args, " "))
	fmt.Fprintf(&b, "# %s, %s, %s/%s, %d CPUs, version %s\n", started.UTC().Format(time.RFC3339), runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), versionString())
	fmt.Fprintf(&b, "# loadavg start %s, end %s\n", loadStart, loadEnd)
	return b.String()
}

// writeResult prints the JSON line on stdout, appends it to jsonl and
// writes the table to out (each if set).
func writeResult(stdout io.Writer, v any, jsonl, out, table string) error {
	line, err := json.Marshal(v)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	if _, err := stdout.Write(line); err != nil {
		return err
	}
	if jsonl != "" {
		if err := os.MkdirAll(filepath.Dir(jsonl), 0o755); err != nil {
			return err
		}
		fh, err := os.OpenFile(jsonl, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		_, err = fh.Write(line)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if out != "" {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, []byte(table), 0o644)
	}
	return nil
}

// runFlags are the flags fanout and storm share.
type runFlags struct{ systems, baseline, out, jsonl string }

// baselineUsage documents --baseline.
const baselineUsage = `systems Fabric is compared with, comma-separated: nats-ws (nats-server's WebSocket listener), centrifugo (Centrifugo ` + fbench.CentrifugoVersion + `, memory engine; installed with go install when missing), centrifugo-deflate (the same with its WebSocket compression on, clients offering permessage-deflate), floor (one write(2) per delivery and nothing else: CPU per delivery only); overrides --systems`

func (f *runFlags) declare(fs *flag.FlagSet, timeout *time.Duration, defTimeout time.Duration, fabricFlags *[]string) {
	fs.StringVar(&f.systems, "systems", "fabric,nats-ws", "systems to measure, in order (fabric-deflate: fabric --compression, clients offering permessage-deflate; centrifugo-deflate: centrifugo with websocket.compression, the same clients)")
	fs.StringVar(&f.baseline, "baseline", "", baselineUsage)
	fs.DurationVar(timeout, "timeout", defTimeout, "abort the whole run after this long")
	fs.Func("fabric-flags", "extra flags for fabric serve, space-separated (e.g. \"--max-accept-rate=0\")", func(v string) error {
		*fabricFlags = append(*fabricFlags, strings.Fields(v)...)
		return nil
	})
	fs.StringVar(&f.out, "out", "", "also write a table to this file, command line first")
	fs.StringVar(&f.jsonl, "jsonl", "", "also append the JSON result line to this file")
}

// parse parses args and returns the systems to measure and this binary
// (which the benchmark starts as server and workers).
func (f *runFlags) parse(fs *flag.FlagSet, args []string) (systems []string, exe string, err error) {
	if err := config.ParseFlags(fs, args); err != nil {
		return nil, "", err
	}
	if fs.NArg() > 0 {
		return nil, "", fmt.Errorf("%s: unexpected arguments %q", strings.TrimPrefix(fs.Name(), "fabric "), fs.Args())
	}
	exe, err = os.Executable()
	return systemsOf(f.systems, f.baseline), exe, err
}

// systemsOf is --systems, or fabric and the --baseline systems if given.
func systemsOf(systems, baseline string) []string {
	if baseline == "" {
		return splitList(systems)
	}
	return append([]string{fbench.SystemFabric}, splitList(baseline)...)
}

func benchFanout(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	o := fbench.FanoutOptions{Log: stderr, ExeEnv: childEnv(environ)}
	fs := flag.NewFlagSet("fabric bench fanout", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.N, "n", 10000, "subscribers of the one channel, per system")
	fs.IntVar(&o.Workers, "workers", 0, "client worker processes (each ≤ 5000 connections, own source address); 0: one per 5000")
	fs.IntVar(&o.Concurrency, "concurrency", 100, "dials in flight per worker while joining")
	fs.Float64Var(&o.Rate, "rate", 10, "fixed publish rate, msg/s (0: saturation phase only)")
	fs.DurationVar(&o.Duration, "duration", 20*time.Second, "publishing time per phase")
	fs.BoolVar(&o.Saturate, "saturate", false, "add a phase publishing as fast as deliveries keep up (see --window)")
	fs.IntVar(&o.Window, "window", 32, "saturation: messages published but not yet delivered to every subscriber, at most")
	fs.IntVar(&o.Payload, "payload", 200, "payload bytes")
	fs.StringVar(&o.Topic, "topic", fbench.DefaultFanoutTopic, "channel: room:… is the default configuration (history and presence: the stream stores each message, the gateway fans out its republished copy), bench:… is ephemeral (core NATS)")
	ephemeral := fs.Bool("ephemeral", false, "use "+fbench.EphemeralFanoutTopic+" instead of the default configuration's "+fbench.DefaultFanoutTopic+" (overrides --topic)")
	var sf runFlags
	sf.declare(fs, &o.Timeout, 10*time.Minute, &o.FabricFlags)
	var err error
	if o.Systems, o.Exe, err = sf.parse(fs, args); err != nil {
		return err
	}
	if *ephemeral {
		o.Topic = fbench.EphemeralFanoutTopic
	}
	loadStart, started := loadavg(), time.Now()
	res, err := fbench.Fanout(ctx, o)
	if err != nil {
		return err
	}
	res.Command = "fabric bench fanout " + strings.Join(args, " ")
	res.LoadStart, res.LoadEnd = loadStart, loadavg()
	var b strings.Builder
	b.WriteString(benchHeader("fanout", args, started, res.LoadStart, res.LoadEnd))
	fmt.Fprintf(&b, "# %d subscribers of %s (NATS subject %s), %d B payloads published with NATS core publish (centrifugo: its HTTP API; floor: its feed), %d worker processes\n",
		res.N, res.Topic, res.Subject, res.PayloadBytes, res.Workers)
	if len(res.FabricFlags) > 0 {
		fmt.Fprintf(&b, "# fabric serve extra flags: %s\n", strings.Join(res.FabricFlags, " "))
	}
	fmt.Fprintf(&b, "# deliv/s and CPU run from the first publish to the last delivery; latency: publish to receipt (same clock); cpu µs/deliv: utime+stime (USER_HZ %d)\n", fbench.ClockTicks())
	fmt.Fprintf(&b, "# cpu_s: server CPU; other_s: CPU used by the rest of the machine meanwhile (other work on the shared VM)\n")
	fmt.Fprintf(&b, "%-8s %-10s %6s %7s %9s %9s %7s %9s %8s %8s %8s %8s %8s %9s %9s %8s\n",
		"phase", "system", "msgs", "msg/s", "expected", "delivered", "ratio", "deliv/s", "p50_ms", "p99_ms", "p999_ms", "max_ms", "cpu_s", "srv_us/d", "cli_us/d", "other_s")
	row := func(name string, s fbench.FanoutSystem, ph *fbench.FanoutPhase) {
		if ph == nil {
			return
		}
		fmt.Fprintf(&b, "%-8s %-10s %6d %7.1f %9d %9d %7.4f %9.0f %8.2f %8.2f %8.2f %8.2f %8.2f %9.2f %9.2f %8.2f\n",
			name, s.System, ph.Published, ph.PublishRate, ph.Expected, ph.Delivered, ph.DeliveredRatio, ph.DeliveriesPerS,
			ph.Latency.P50, ph.Latency.P99, ph.Latency.P999, ph.Latency.Max, ph.ServerCPUS, ph.ServerCPUPerDelivery, ph.ClientCPUPerDelivery, ph.OtherCPUS)
	}
	for _, s := range res.Systems {
		row("rate", s, s.Rate)
	}
	for _, s := range res.Systems {
		row("saturate", s, s.Saturate)
	}
	fmt.Fprintf(&b, "%-10s %6s %7s %14s %14s %14s %10s %6s\n", "system", "N", "join_s", "rss_before_B", "rss_B", "rss_end_B", "B/conn", "lost")
	for _, s := range res.Systems {
		fmt.Fprintf(&b, "%-10s %6d %7.1f %14d %14d %14d %10.0f %6d\n", s.System, s.N, s.JoinS, s.RSSBefore, s.RSS, s.RSSEnd, s.RSSPerConn, s.ClientsLost)
	}
	for _, s := range res.Systems[min(1, len(res.Systems)):] {
		writeRatios(&b, []fbench.FanoutSystem{res.Systems[0], s}, res.RatiosVs[s.System], func(s fbench.FanoutSystem) string { return s.System })
	}
	fmt.Fprint(stderr, b.String())
	return writeResult(stdout, res, sf.jsonl, sf.out, b.String())
}

func writeRatios[S any](b *strings.Builder, systems []S, ratios map[string]float64, name func(S) string) {
	if len(ratios) == 0 || len(systems) != 2 {
		return
	}
	keys := make([]string, 0, len(ratios))
	for k := range ratios {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(b, "ratios %s/%s:", name(systems[0]), name(systems[1]))
	for _, k := range keys {
		fmt.Fprintf(b, " %s %.3f", k, ratios[k])
	}
	b.WriteString("\n")
}

func benchStorm(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	o := fbench.StormOptions{Log: stderr, ExeEnv: childEnv(environ)}
	fs := flag.NewFlagSet("fabric bench storm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.N, "n", 15000, "clients per system, all connecting and joining at once")
	fs.IntVar(&o.Workers, "workers", 0, "client worker processes, started together (each ≤ 5000 connections); 0: one per 5000")
	fs.IntVar(&o.Concurrency, "concurrency", 500, "dials in flight per worker")
	fs.StringVar(&o.Topic, "topic", "room:storm-%d", `channel to join, "%d" = client index mod 100; room:… is the default configuration (history and presence), bench:… is ephemeral; several comma-separated: each system is measured once per topic and the ratios are first/second`)
	var sf runFlags
	sf.declare(fs, &o.Timeout, 5*time.Minute, &o.FabricFlags)
	var err error
	if o.Systems, o.Exe, err = sf.parse(fs, args); err != nil {
		return err
	}
	if o.Topics = splitList(o.Topic); len(o.Topics) > 0 {
		o.Topic = o.Topics[0]
	}
	loadStart, started := loadavg(), time.Now()
	res, err := fbench.Storm(ctx, o)
	if err != nil {
		return err
	}
	res.Command = "fabric bench storm " + strings.Join(args, " ")
	res.LoadStart, res.LoadEnd = loadStart, loadavg()
	var b strings.Builder
	b.WriteString(benchHeader("storm", args, started, res.LoadStart, res.LoadEnd))
	fmt.Fprintf(&b, "# %d clients in %d worker processes started together, %d dials in flight each, no retries; joining the topic shown (nats-ws: CONNECT + SUB)\n",
		res.N, res.Workers, res.Concurrency)
	if len(res.FabricFlags) > 0 {
		fmt.Fprintf(&b, "# fabric serve extra flags: %s\n", strings.Join(res.FabricFlags, " "))
	}
	fmt.Fprintf(&b, "# all_s: worker start to last join; span_s: longest first-dial-to-last-join inside one worker; join ms: per connection dial+upgrade+join\n")
	fmt.Fprintf(&b, "# refused: 503/429 answers (overload protection), each retried after Retry-After ±50 %% (not failures); failed and dialerr must be 0\n")
	fmt.Fprintf(&b, "# rss_B: 1 s after the last join; peak_rss_B: the server's VmHWM then (its peak, the storm included)\n")
	fmt.Fprintf(&b, "%-8s %-16s %6s %6s %6s %7s %7s %7s %7s %8s %8s %8s %8s %8s %11s %14s %14s %14s %8s\n",
		"system", "topic", "N", "joined", "failed", "dialerr", "refused", "all_s", "span_s", "conn/s", "p50_ms", "p99_ms", "max_ms", "cpu_s", "cpu_us/conn", "rss_before_B", "rss_B", "peak_rss_B", "B/conn")
	for _, s := range res.Systems {
		fmt.Fprintf(&b, "%-8s %-16s %6d %6d %6d %7d %7d %7.2f %7.2f %8.0f %8.1f %8.1f %8.1f %8.2f %11.1f %14d %14d %14d %8.0f\n",
			s.System, s.Topic, s.N, s.Joined, s.Failed, s.DialErrors, s.Refused, s.AllJoinedS, s.WorkerSpanS, s.ConnsPerS,
			s.JoinLatency.P50, s.JoinLatency.P99, s.JoinLatency.Max, s.ServerCPUS, s.ServerCPUPerJoin, s.RSSBefore, s.RSS, s.PeakRSS, s.RSSPerConn)
	}
	writeRatios(&b, res.Systems, res.Ratios, func(s fbench.StormSystem) string { return s.System + " " + s.Topic })
	fmt.Fprint(stderr, b.String())
	if err := writeResult(stdout, res, sf.jsonl, sf.out, b.String()); err != nil {
		return err
	}
	if n := res.Failures(); n > 0 {
		return fmt.Errorf("bench storm: %d handshake/join failures", n)
	}
	return nil
}

func benchResume(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	o := fbench.ResumeOptions{Log: stderr, ExeEnv: childEnv(environ)}
	fs := flag.NewFlagSet("fabric bench resume", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.N, "n", 10000, "clients, all reconnecting at once")
	fs.IntVar(&o.Workers, "workers", 0, "client worker processes (each ≤ 5000 connections, own source address); 0: one per 5000")
	fs.IntVar(&o.Concurrency, "concurrency", 500, "dials in flight per worker")
	fs.StringVar(&o.Topic, "topic", "room:resume-%d", `persistent channel each client joins, "%d" = index mod 100`)
	fs.IntVar(&o.Missed, "missed", 100, "messages stored on each channel while the clients are away")
	fs.StringVar(&o.ServerExe, "server-exe", "", "run fabric serve from this binary (say the commit before a change) with this build's clients, to compare servers in one sitting")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Minute, "abort the whole run after this long")
	fs.Func("fabric-flags", "extra flags for fabric serve, space-separated", func(v string) error {
		o.FabricFlags = append(o.FabricFlags, strings.Fields(v)...)
		return nil
	})
	var out, jsonl string
	fs.StringVar(&out, "out", "", "also write a table to this file, command line first")
	fs.StringVar(&jsonl, "jsonl", "", "also append the JSON result line to this file")
	if err := config.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench resume: unexpected arguments %q", fs.Args())
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	o.Exe = exe
	loadStart, started := loadavg(), time.Now()
	res, err := fbench.Resume(ctx, o)
	if err != nil {
		return err
	}
	res.Command = "fabric bench resume " + strings.Join(args, " ")
	res.LoadStart, res.LoadEnd = loadStart, loadavg()
	var b strings.Builder
	b.WriteString(benchHeader("resume", args, started, res.LoadStart, res.LoadEnd))
	fmt.Fprintf(&b, "# %d clients of %d channels (%s) in %d workers joined, all dropped, %d messages stored per channel (JetStream, acknowledged), then all reconnected at once with {epoch, offset} join params\n",
		res.N, res.Channels, res.Topic, res.Workers, res.Missed)
	if res.ServerExe != "" {
		fmt.Fprintf(&b, "# server: fabric serve from %s, clients from this build\n", res.ServerExe)
	}
	fmt.Fprintf(&b, "# recovered: join answered recovered:true and all %d missed messages received, in stream order after the resumed offset; recovered_s: resume command to the last recovered client; live_s: one more message per channel to every client\n", res.Missed)
	fmt.Fprintf(&b, "# cpu: server utime+stime over the wave, per client; peak_rss_B: VmHWM over the wave (reset before it: %v)\n", res.PeakRSSReset)
	fmt.Fprintf(&b, "# p50_s, p99_s: per client, resume command to recovered; refused: 503/429 answers retried after Retry-After; client_cpu_s: the client workers' CPU over the wave (same machine)\n")
	fmt.Fprintf(&b, "%6s %9s %9s %6s %7s %11s %6s %6s %7s %8s %8s %12s %12s %14s %14s %14s\n",
		"N", "recovered", "not_recov", "failed", "refused", "recovered_s", "p50_s", "p99_s", "live_s", "live_ok", "cpu_s", "cpu_us/client", "client_cpu_s", "rss_before_B", "peak_rss_B", "rss_after_B")
	fmt.Fprintf(&b, "%6d %9d %9d %6d %7d %11.2f %6.2f %6.2f %7.2f %8d %8.2f %12.1f %12.2f %14d %14d %14d\n",
		res.N, res.Recovered, res.NotRecovered, res.Failed, res.Refused, res.RecoveredS, res.RecoveredP50S, res.RecoveredP99S, res.LiveS, res.LiveDelivered, res.ServerCPUS, res.ServerCPUPerRes, res.ClientCPUS, res.RSSBefore, res.PeakRSS, res.RSSAfter)
	fmt.Fprint(stderr, b.String())
	if err := writeResult(stdout, res, jsonl, out, b.String()); err != nil {
		return err
	}
	if res.Failed > 0 || res.NotRecovered > 0 {
		return fmt.Errorf("bench resume: %d not recovered, %d failed", res.NotRecovered, res.Failed)
	}
	return nil
}

func benchPlot(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fabric bench plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "JSON result lines of fanout/storm runs (several files: comma-separated)")
	out := fs.String("out", "bench/results/plot.png", "PNG to write")
	if err := config.ParseFlags(fs, args); err != nil {
		return err
	}
	if *in == "" || fs.NArg() > 0 {
		return fmt.Errorf("bench plot: --in FILE.jsonl is required, no arguments")
	}
	var data []byte
	for _, name := range splitList(*in) {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		data = append(append(data, b...), '\n')
	}
	png, err := fbench.Plot(data)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(*out, png, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", *out)
	return nil
}

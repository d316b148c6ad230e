package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/nats/subject"
)

// ResumeOptions configures `fabric bench resume`: N clients of Channels
// persistent channels join, all drop at once, Missed messages are stored
// on every channel, and all reconnect at once through real WebSockets,
// each joining with the position its first join was answered with.
type ResumeOptions struct {
	Exe         string
	ExeEnv      []string
	N           int
	Workers     int
	Concurrency int    // dials in flight per worker, both while joining and resuming
	Topic       string // "%d" = index mod 100; default room:resume-%d
	Missed      int    // messages stored per channel while everyone is away
	Payload     int
	FabricFlags []string
	// ServerExe, when set, is the fabric binary the server runs from
	// (the clients stay Exe): two builds of the server measured with the
	// same clients.
	ServerExe string
	Timeout   time.Duration
	Log       io.Writer
}

// ResumeResult is one run: one JSON line.
type ResumeResult struct {
	Bench       string   `json:"bench"`
	Command     string   `json:"command,omitempty"`
	Time        string   `json:"time"`
	LoadStart   string   `json:"loadavg_start,omitempty"`
	LoadEnd     string   `json:"loadavg_end,omitempty"`
	N           int      `json:"n"`
	Workers     int      `json:"workers"`
	Channels    int      `json:"channels"`
	Missed      int      `json:"missed_per_channel"`
	Topic       string   `json:"topic"`
	FabricFlags []string `json:"fabric_flags,omitempty"`
	ServerExe   string   `json:"server_exe,omitempty"`
	JoinS       float64  `json:"join_s"`
	// Recovered: answered recovered:true and received every missed
	// message; NotRecovered: answered otherwise or short of messages;
	// Failed: no join answer.
	Recovered    int64 `json:"recovered"`
	NotRecovered int64 `json:"not_recovered"`
	Failed       int64 `json:"failed"`
	// RecoveredS: from the "resume" command to the last recovered client
	// (the slowest worker's figure).
	RecoveredS float64 `json:"recovered_s"`
	// RecoveredP50S, RecoveredP99S: the same per client, percentiles.
	RecoveredP50S float64 `json:"recovered_p50_s"`
	RecoveredP99S float64 `json:"recovered_p99_s"`
	// Refused: 503/429 answers during the wave, each retried after
	// Retry-After (the accept budget's refusals).
	Refused int64 `json:"refused"`
	// LiveS: after that, one live message per channel reached every
	// client in this long.
	LiveS           float64 `json:"live_s"`
	LiveDelivered   int64   `json:"live_delivered"`
	ServerCPUS      float64 `json:"server_cpu_s"`
	ServerCPUPerRes float64 `json:"server_cpu_us_per_resume"`
	// ClientCPUS: the client workers' CPU over the wave; they share the
	// machine with the server.
	ClientCPUS   float64 `json:"client_cpu_s"`
	RSSBefore    int64   `json:"rss_before_bytes"` // clients away, missed messages stored
	PeakRSS      int64   `json:"peak_rss_bytes"`   // VmHWM over the resume wave (reset before it)
	PeakRSSReset bool    `json:"peak_rss_reset"`   // false: VmHWM could not be reset, so it covers the whole run
	RSSAfter     int64   `json:"rss_after_bytes"`
	FirstError   string  `json:"first_error,omitempty"`
}

// Resume runs the resume-wave benchmark against Fabric.
func Resume(ctx context.Context, o ResumeOptions) (*ResumeResult, error) {
	o.Workers = autoWorkers(o.N, o.Workers)
	if err := checkFleetSize(o.N, o.Workers); err != nil {
		return nil, fmt.Errorf("resume: %w", err)
	}
	if o.Topic == "" {
		o.Topic = "room:resume-%d"
	}
	if o.Missed <= 0 {
		o.Missed = 100
	}
	if o.Payload <= 0 {
		o.Payload = 200
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 500
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	channels := 1
	if strings.Contains(o.Topic, "%d") {
		channels = min(100, o.N)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	res := &ResumeResult{Bench: "resume", Time: time.Now().UTC().Format(time.RFC3339), N: o.N, Workers: o.Workers,
		Channels: channels, Missed: o.Missed, Topic: o.Topic, FabricFlags: o.FabricFlags, ServerExe: o.ServerExe}

	p := procOpts{Exe: o.Exe, Env: o.ExeEnv}
	sys := SystemFabric
	if o.ServerExe != "" {
		sys += "@" + o.ServerExe // startServer's way to run another build
	}
	srv, err := startServer(ctx, p, sys, o.FabricFlags)
	if err != nil {
		return res, err
	}
	defer srv.stop()
	f, err := startFleet(fleetOptions{procOpts: p, Sys: SystemFabric, Target: srv.target, Mode: srv.mode, Topic: o.Topic,
		N: o.N, Workers: o.Workers, Concurrency: o.Concurrency, Retries: 2, StatusEvery: time.Second, Log: o.Log, ResumeWant: o.Missed})
	if err != nil {
		return res, err
	}
	defer f.close()
	if err := f.pumpUntil(ctx, 0, false, "joining", func() bool { return f.allReady(false) }); err != nil {
		return res, srv.wrap(fmt.Errorf("joining: %w", err))
	}
	res.JoinS = time.Since(f.started).Seconds()
	fmt.Fprintf(o.Log, "resume: %d joined %d channels in %.1fs; dropping all\n", o.N, channels, res.JoinS)

	if err := f.command("drop"); err != nil {
		return res, err
	}
	if err := f.pumpUntil(ctx, time.Minute, false, "dropping", func() bool {
		for i := range f.state {
			if !f.state[i].dropped {
				return false
			}
		}
		return true
	}); err != nil {
		return res, srv.wrap(fmt.Errorf("dropping: %w", err))
	}

	nc, err := nats.Connect(srv.natsURL, nats.Name("fabric-bench-resume"), nats.MaxReconnects(0))
	if err != nil {
		return res, srv.wrap(fmt.Errorf("publisher: %w", err))
	}
	defer nc.Close()
	subjects := make([]string, channels)
	for k := range subjects {
		if subjects[k], err = subject.Map("fabric", strings.ReplaceAll(o.Topic, "%d", strconv.Itoa(k))); err != nil {
			return res, err
		}
	}
	if err := storeMissed(ctx, nc, subjects, o.Missed, o.Payload); err != nil {
		return res, srv.wrap(err)
	}
	fmt.Fprintf(o.Log, "resume: stored %d messages on each of %d channels; settling 2s\n", o.Missed, channels)
	if err := f.pumpUntil(ctx, 2*time.Second, false, "", func() bool { return false }); err != nil && ctx.Err() != nil {
		return res, err
	}
	if res.RSSBefore, err = VmRSS(srv.pid); err != nil {
		return res, srv.wrap(err)
	}
	// Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
	res.PeakRSSReset = os.WriteFile("/proc/"+strconv.Itoa(srv.pid)+"/clear_refs", []byte("5"), 0) == nil
	cpu0, err := CPUTime(srv.pid)
	if err != nil {
		return res, srv.wrap(err)
	}
	ccpu0 := f.cpu()
	t0 := time.Now()
	if err := f.command("resume"); err != nil {
		return res, err
	}
	if err := f.pumpUntil(ctx, 5*time.Minute, false, "resuming", func() bool {
		for i := range f.state {
			if f.state[i].resumed == nil {
				return false
			}
		}
		return true
	}); err != nil {
		return res, srv.wrap(fmt.Errorf("resuming: %w", err))
	}
	wall := time.Since(t0)
	cpu1, err := CPUTime(srv.pid)
	if err != nil {
		return res, srv.wrap(err)
	}
	res.ClientCPUS = (f.cpu() - ccpu0).Seconds()
	if res.PeakRSS, err = VmHWM(srv.pid); err != nil {
		return res, srv.wrap(err)
	}
	h := NewCounts()
	for i := range f.state {
		r := f.state[i].resumed
		h.AddSparse(r.Hist)
		res.Refused += r.Refused
		res.Recovered += r.Recovered
		res.NotRecovered += r.NotRecovered
		res.Failed += r.Failed
		res.RecoveredS = max(res.RecoveredS, float64(r.ResumeNanos)/1e9)
		if r.Error != "" && res.FirstError == "" {
			res.FirstError = r.Error
		}
	}
	res.RecoveredP50S, res.RecoveredP99S = h.Quantile(0.5)/1e6, h.Quantile(0.99)/1e6
	res.ServerCPUS = (cpu1 - cpu0).Seconds()
	if res.Recovered > 0 {
		res.ServerCPUPerRes = float64((cpu1 - cpu0).Microseconds()) / float64(o.N)
	}
	if res.FirstError != "" {
		fmt.Fprintf(o.Log, "resume: first error: %s\n", res.FirstError)
	}
	fmt.Fprintf(o.Log, "resume: %d recovered, %d not, %d failed, %d refusals retried; recovered p50 %.2fs, p99 %.2fs, last after %.2fs (all answered after %.2fs); server CPU %.2fs, clients %.2fs\n",
		res.Recovered, res.NotRecovered, res.Failed, res.Refused, res.RecoveredP50S, res.RecoveredP99S, res.RecoveredS, wall.Seconds(), res.ServerCPUS, res.ClientCPUS)

	// Live: one more message per channel must reach every client.
	base, _, err := f.stats(ctx)
	if err != nil {
		return res, err
	}
	t1 := time.Now()
	pub := payload{size: o.Payload}
	for _, s := range subjects {
		if err := nc.Publish(s, pub.next()); err != nil {
			return res, err
		}
	}
	if err := nc.FlushTimeout(20 * time.Second); err != nil {
		return res, srv.wrap(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		total, _, err := f.stats(ctx)
		if err != nil {
			return res, err
		}
		res.LiveDelivered = total - base
		res.LiveS = time.Since(t1).Seconds()
		if res.LiveDelivered >= int64(o.N) || time.Now().After(deadline) {
			break
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return res, err
		}
	}
	if res.RSSAfter, err = VmRSS(srv.pid); err != nil {
		return res, srv.wrap(err)
	}
	return res, nil
}

// storeMissed stores missed messages on each subject with JetStream
// publishes, waiting for every acknowledgement.
func storeMissed(ctx context.Context, nc *nats.Conn, subjects []string, missed, size int) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	p := payload{size: size}
	for i := 0; i < missed; i++ {
		for _, s := range subjects {
			if _, err := js.PublishAsync(s, append([]byte(nil), p.next()...)); err != nil {
				return fmt.Errorf("storing missed messages: %w", err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(30 * time.Second):
			return fmt.Errorf("storing missed messages: no acknowledgement in 30 s")
		}
	}
	return nil
}

package bench

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/fabric-rt/fabric/nats/subject"
)

// StormOptions configures `fabric bench storm`: every client connects and
// joins at once.
type StormOptions struct {
	Exe    string
	ExeEnv []string
	N      int // clients per system
	// Workers is the number of client worker processes, all started at
	// once; 0: one per 5000 connections.
	Workers     int
	Concurrency int // dials in flight per worker
	// Topic is the Phoenix topic, "%d" replaced by i%100; default
	// room:storm-%d (the default configuration: history and presence).
	Topic string
	// Topics, when set, replaces Topic: each system is measured once per
	// topic, in order (e.g. room:lobby,bench:lobby compares presence with
	// an ephemeral channel in one run).
	Topics      []string
	Systems     []string
	FabricFlags []string      // extra `fabric serve` flags
	Timeout     time.Duration // whole run
	Log         io.Writer
}

// StormSystem is one system's result.
type StormSystem struct {
	System string `json:"system"`
	Topic  string `json:"topic"`
	N      int    `json:"n"`
	Joined int64  `json:"joined"`
	// Failed connections (no retries: each is a failed dial, handshake or
	// join) and failed attempts in total.
	Failed     int64 `json:"failed"`
	DialErrors int64 `json:"dial_errors"`
	// Refused counts 503/429 answers (overload protection); the client
	// came back after Retry-After, so they are not failures.
	Refused int64 `json:"refused"`
	// AllJoinedS runs from starting the worker processes to the last
	// worker's report that all its connections joined; WorkerSpanS is the
	// longest span inside one worker from its first dial to its last join
	// (no process start-up).
	AllJoinedS  float64 `json:"all_joined_s"`
	WorkerSpanS float64 `json:"worker_span_s"`
	ConnsPerS   float64 `json:"conns_per_s"` // N / AllJoinedS
	// JoinLatency is per connection: dial + WebSocket handshake + join.
	JoinLatency      Latency `json:"join_latency"`
	ServerCPUS       float64 `json:"server_cpu_s"`
	ServerCPUPerJoin float64 `json:"server_cpu_us_per_conn"`
	RSSBefore        int64   `json:"rss_before_bytes"`
	RSS              int64   `json:"rss_bytes"` // 1 s after all joined
	// PeakRSS is the server's VmHWM at that time: the most it ever held
	// resident, the storm included.
	PeakRSS     int64   `json:"peak_rss_bytes"`
	RSSPerConn  float64 `json:"rss_per_conn_bytes"`
	ClientsLost int64   `json:"clients_lost"`
}

// StormResult is the whole run: one JSON line.
type StormResult struct {
	Bench       string             `json:"bench"`
	Command     string             `json:"command,omitempty"`
	Time        string             `json:"time"`
	LoadStart   string             `json:"loadavg_start,omitempty"`
	LoadEnd     string             `json:"loadavg_end,omitempty"`
	N           int                `json:"n"`
	Workers     int                `json:"workers"`
	Concurrency int                `json:"concurrency"`
	Topic       string             `json:"topic"`
	Topics      []string           `json:"topics,omitempty"`
	FabricFlags []string           `json:"fabric_flags,omitempty"`
	Systems     []StormSystem      `json:"systems"`
	Ratios      map[string]float64 `json:"ratios,omitempty"` // first system / second
}

// Failures is the number of connections that did not join, all systems.
func (r *StormResult) Failures() int64 {
	var n int64
	for _, s := range r.Systems {
		n += s.Failed + s.DialErrors
	}
	return n
}

// Storm runs the connection-storm benchmark on each system in turn.
func Storm(ctx context.Context, o StormOptions) (*StormResult, error) {
	o.Workers = autoWorkers(o.N, o.Workers)
	if err := checkFleetSize(o.N, o.Workers); err != nil {
		return nil, fmt.Errorf("storm: %w", err)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 500
	}
	if o.Topic == "" {
		o.Topic = "room:storm-%d"
	}
	if len(o.Topics) == 0 {
		o.Topics = []string{o.Topic}
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if len(o.Systems) == 0 {
		o.Systems = []string{SystemFabric, SystemNATSWS}
	}
	for _, topic := range o.Topics {
		if _, err := subject.Map("fabric", topic); err != nil {
			return nil, fmt.Errorf("storm: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	res := &StormResult{Bench: "storm", Time: time.Now().UTC().Format(time.RFC3339), N: o.N, Workers: o.Workers,
		Concurrency: o.Concurrency, Topic: o.Topics[0], FabricFlags: o.FabricFlags}
	if len(o.Topics) > 1 {
		res.Topics = o.Topics
	}
	for _, topic := range o.Topics {
		r, err := eachSystem(ctx, "storm", o.Systems, o.Timeout, func(sys string) (StormSystem, error) {
			return stormOne(ctx, o, sys, topic)
		})
		res.Systems = append(res.Systems, r...)
		if err != nil {
			return res, err
		}
	}
	if len(res.Systems) == 2 {
		a, b := res.Systems[0], res.Systems[1]
		r := ratios{}
		r.add("conns_per_s", a.ConnsPerS, b.ConnsPerS)
		r.add("all_joined_s", a.AllJoinedS, b.AllJoinedS)
		r.add("server_cpu_us_per_conn", a.ServerCPUPerJoin, b.ServerCPUPerJoin)
		r.add("rss_per_conn", a.RSSPerConn, b.RSSPerConn)
		r.add("peak_rss", float64(a.PeakRSS), float64(b.PeakRSS))
		res.Ratios = r
	}
	return res, nil
}

func stormOne(ctx context.Context, o StormOptions, sys, topic string) (StormSystem, error) {
	res := StormSystem{System: sys, Topic: topic, N: o.N}
	p := procOpts{Exe: o.Exe, Env: o.ExeEnv}
	srv, err := startServer(ctx, p, sys, o.FabricFlags)
	if err != nil {
		return res, err
	}
	defer srv.stop()
	if err := sleepCtx(ctx, time.Second); err != nil {
		return res, err
	}
	if res.RSSBefore, err = VmRSS(srv.pid); err != nil {
		return res, srv.wrap(err)
	}
	if srv.mode == ModeNATSWS {
		topic, _ = subject.Map("fabric", topic) // "%d" survives: '%' is escaped as =25
		topic = unescapePercentD(topic)
	}
	cpu0, err := CPUTime(srv.pid)
	if err != nil {
		return res, err
	}
	f, err := startFleet(fleetOptions{procOpts: p, Sys: sys, Target: srv.target, Mode: srv.mode, Topic: topic,
		N: o.N, Workers: o.Workers, Concurrency: o.Concurrency, Retries: 0, Log: o.Log})
	if err != nil {
		return res, err
	}
	defer f.close()
	fmt.Fprintf(o.Log, "%s: pid %d; %d workers connecting %d clients at once (%d dials in flight each)\n", sys, srv.pid, len(f.workers), o.N, o.Concurrency)
	if err := f.pumpUntil(ctx, 0, true, "storm", func() bool { return f.allReady(true) }); err != nil {
		return res, srv.wrap(fmt.Errorf("storm: %w", err))
	}
	all := time.Since(f.started)
	cpu1, err := CPUTime(srv.pid)
	if err != nil {
		return res, srv.wrap(err)
	}
	res.AllJoinedS = all.Seconds()
	h := NewCounts()
	for _, s := range f.state {
		res.Joined += s.joined
		res.Failed += s.failed
		res.DialErrors += s.dialErrors
		res.Refused += s.refused
		if span := time.Duration(s.joinNanos).Seconds(); span > res.WorkerSpanS {
			res.WorkerSpanS = span
		}
		h.AddSparse(s.joinHist)
	}
	res.JoinLatency = latencyOf(h)
	if res.AllJoinedS > 0 {
		res.ConnsPerS = float64(res.Joined) / res.AllJoinedS
	}
	res.ServerCPUS = (cpu1 - cpu0).Seconds()
	if res.Joined > 0 {
		res.ServerCPUPerJoin = float64((cpu1 - cpu0).Microseconds()) / float64(res.Joined)
	}
	fmt.Fprintf(o.Log, "%s: %d joined, %d failed, %d refusals retried, in %.2fs (%.0f conn/s); p50 %.1f ms, p99 %.1f ms per connection\n",
		sys, res.Joined, res.Failed, res.Refused, res.AllJoinedS, res.ConnsPerS, res.JoinLatency.P50, res.JoinLatency.P99)
	if err := f.pumpUntil(ctx, time.Second, true, "", func() bool { return false }); err != nil && ctx.Err() != nil {
		return res, err
	}
	if res.RSS, err = VmRSS(srv.pid); err != nil {
		return res, srv.wrap(err)
	}
	if res.PeakRSS, err = VmHWM(srv.pid); err != nil {
		return res, srv.wrap(err)
	}
	if res.Joined > 0 {
		res.RSSPerConn = float64(res.RSS-res.RSSBefore) / float64(res.Joined)
	}
	res.ClientsLost = f.lost()
	return res, nil
}

func unescapePercentD(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if i+4 <= len(s) && s[i:i+4] == "=25d" {
			out = append(out, '%', 'd')
			i += 3
			continue
		}
		out = append(out, s[i])
	}
	return string(out)
}

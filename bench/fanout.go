package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/nats/subject"
)

// Topics of the benchmarks: what `fabric serve` gives a user by default
// (room:…, history and presence), and an ephemeral channel (bench:…, core
// NATS only, the same work as a NATS SUB) for the --ephemeral flag.
const (
	DefaultFanoutTopic   = "room:fanout"
	EphemeralFanoutTopic = "bench:fanout"
	DefaultIdleTopic     = "room:idle-%d"
	EphemeralIdleTopic   = "bench:idle-%d"
)

// FanoutOptions configures `fabric bench fanout`.
type FanoutOptions struct {
	Exe    string   // binary providing serve, bench nats-ws-server, bench clients
	ExeEnv []string // environment for child processes
	N      int      // subscribers of the one channel, per system
	// Workers is the number of client worker processes; 0: one per 5000
	// connections.
	Workers     int
	Concurrency int // dials in flight per worker
	// Rate is the fixed publish rate (msg/s) of the first phase; 0 skips it.
	Rate     float64
	Duration time.Duration // publishing time of each phase
	// Saturate adds a phase that publishes as fast as deliveries keep up:
	// at most Window messages not yet delivered to every subscriber.
	Saturate bool
	Window   int
	Payload  int // payload bytes (JSON, carrying the publish time)
	// Topic is the Phoenix topic; default DefaultFanoutTopic (the default
	// configuration: history and presence).
	Topic   string
	Systems []string
	// FabricFlags are extra `fabric serve` flags.
	FabricFlags []string
	Timeout     time.Duration // whole run
	Log         io.Writer
}

// Latency is a set of percentiles in milliseconds.
type Latency struct {
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
}

func latencyOf(h Counts) Latency {
	return Latency{P50: h.Quantile(0.5) / 1000, P99: h.Quantile(0.99) / 1000, P999: h.Quantile(0.999) / 1000, Max: h.Max() / 1000}
}

// FanoutPhase is one publishing phase's measurement.
type FanoutPhase struct {
	Published      int64   `json:"published"`
	PublishRate    float64 `json:"publish_rate"` // achieved, msg/s over the publishing window
	Expected       int64   `json:"expected"`     // published × N
	Delivered      int64   `json:"delivered"`
	DeliveredRatio float64 `json:"delivered_ratio"`
	// ElapsedS runs from the first publish to the last delivery seen, and
	// is at least the publishing window.
	ElapsedS       float64 `json:"elapsed_s"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`
	Latency        Latency `json:"latency"`
	// ServerCPUS is the server's utime+stime over ElapsedS.
	ServerCPUS           float64 `json:"server_cpu_s"`
	ServerCPUPerDelivery float64 `json:"server_cpu_us_per_delivery"`
	ClientCPUPerDelivery float64 `json:"client_cpu_us_per_delivery"`
	// OtherCPUS is the CPU time the rest of the machine used meanwhile
	// (all CPUs busy, minus server, workers and this process): noise.
	OtherCPUS float64 `json:"other_cpu_s"`
}

// FanoutSystem is one system's result.
type FanoutSystem struct {
	System      string       `json:"system"`
	N           int          `json:"n"`
	JoinS       float64      `json:"join_s"`
	RSSBefore   int64        `json:"rss_before_bytes"` // no clients
	RSS         int64        `json:"rss_bytes"`        // N joined, before publishing
	RSSEnd      int64        `json:"rss_end_bytes"`    // after the last phase
	RSSPerConn  float64      `json:"rss_per_conn_bytes"`
	Rate        *FanoutPhase `json:"rate,omitempty"`
	Saturate    *FanoutPhase `json:"saturate,omitempty"`
	ClientsLost int64        `json:"clients_lost"`
}

// FanoutResult is the whole run: one JSON line.
type FanoutResult struct {
	Bench        string             `json:"bench"`
	Command      string             `json:"command,omitempty"`
	Time         string             `json:"time"`
	LoadStart    string             `json:"loadavg_start,omitempty"`
	LoadEnd      string             `json:"loadavg_end,omitempty"`
	N            int                `json:"n"`
	Workers      int                `json:"workers"`
	Rate         float64            `json:"rate"`
	DurationS    float64            `json:"duration_s"`
	PayloadBytes int                `json:"payload_bytes"`
	Topic        string             `json:"topic"`
	Subject      string             `json:"subject"`
	FabricFlags  []string           `json:"fabric_flags,omitempty"`
	Systems      []FanoutSystem     `json:"systems"`
	Ratios       map[string]float64 `json:"ratios,omitempty"` // first system / second
	// RatiosVs is the first system's figures over each other system's.
	RatiosVs map[string]map[string]float64 `json:"ratios_vs,omitempty"`
}

func fanoutRatios(a, b FanoutSystem) ratios {
	r := ratios{}
	r.add("rss_per_conn", a.RSSPerConn, b.RSSPerConn)
	if a.Rate != nil && b.Rate != nil {
		r.add("rate_deliveries_per_s", a.Rate.DeliveriesPerS, b.Rate.DeliveriesPerS)
		r.add("rate_cpu_us_per_delivery", a.Rate.ServerCPUPerDelivery, b.Rate.ServerCPUPerDelivery)
		r.add("rate_p99", a.Rate.Latency.P99, b.Rate.Latency.P99)
	}
	if a.Saturate != nil && b.Saturate != nil {
		r.add("saturate_deliveries_per_s", a.Saturate.DeliveriesPerS, b.Saturate.DeliveriesPerS)
		r.add("saturate_cpu_us_per_delivery", a.Saturate.ServerCPUPerDelivery, b.Saturate.ServerCPUPerDelivery)
	}
	return r
}

func autoWorkers(n, w int) int {
	if w > 0 {
		return w
	}
	return (n + 4999) / 5000
}

func checkFleetSize(n, workers int) error {
	if n <= 0 || workers <= 0 {
		return fmt.Errorf("--n and --workers must be positive")
	}
	if (n+workers-1)/workers > 5000 {
		return fmt.Errorf("%d connections over %d workers is more than 5000 per worker (fd limit); add --workers", n, workers)
	}
	if workers > 250 {
		return fmt.Errorf("at most 250 workers")
	}
	return nil
}

// Fanout runs the fan-out benchmark on each system in turn.
func Fanout(ctx context.Context, o FanoutOptions) (*FanoutResult, error) {
	o.Workers = autoWorkers(o.N, o.Workers)
	if err := checkFleetSize(o.N, o.Workers); err != nil {
		return nil, fmt.Errorf("fanout: %w", err)
	}
	if o.Rate < 0 || (o.Rate == 0 && !o.Saturate) {
		if o.Rate < 0 {
			return nil, fmt.Errorf("fanout: --rate must be ≥ 0")
		}
		o.Saturate = true // --rate 0 means saturation only
	}
	if o.Duration <= 0 {
		return nil, fmt.Errorf("fanout: --duration must be positive")
	}
	if o.Rate > 0 && o.Rate*o.Duration.Seconds() < 1 {
		return nil, fmt.Errorf("fanout: --rate × --duration is less than one message")
	}
	if o.Window <= 0 {
		o.Window = 32
	}
	if o.Payload <= 0 {
		o.Payload = 200
	}
	if o.Topic == "" {
		o.Topic = DefaultFanoutTopic
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if len(o.Systems) == 0 {
		o.Systems = []string{SystemFabric, SystemNATSWS}
	}
	subj, err := subject.Map("fabric", o.Topic)
	if err != nil {
		return nil, fmt.Errorf("fanout: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	res := &FanoutResult{Bench: "fanout", Time: time.Now().UTC().Format(time.RFC3339), N: o.N, Workers: o.Workers,
		Rate: o.Rate, DurationS: o.Duration.Seconds(), PayloadBytes: o.Payload, Topic: o.Topic, Subject: subj, FabricFlags: o.FabricFlags}
	res.Systems, err = eachSystem(ctx, "fanout", o.Systems, o.Timeout, func(sys string) (FanoutSystem, error) {
		return fanoutOne(ctx, o, sys, subj)
	})
	if err != nil {
		return res, err
	}
	for i := 1; i < len(res.Systems); i++ {
		r := fanoutRatios(res.Systems[0], res.Systems[i])
		if i == 1 {
			res.Ratios = r
		}
		if res.RatiosVs == nil {
			res.RatiosVs = map[string]map[string]float64{}
		}
		res.RatiosVs[res.Systems[i].System] = r
	}
	return res, nil
}

func fanoutOne(ctx context.Context, o FanoutOptions, sys, subj string) (FanoutSystem, error) {
	res := FanoutSystem{System: sys, N: o.N}
	p := procOpts{Exe: o.Exe, Env: o.ExeEnv}
	srv, err := startServer(ctx, p, sys, o.FabricFlags)
	if err != nil {
		return res, err
	}
	defer srv.stop()
	fmt.Fprintf(o.Log, "%s: pid %d, clients %s\n", sys, srv.pid, srv.target)
	if err := sleepCtx(ctx, time.Second); err != nil {
		return res, err
	}
	if res.RSSBefore, err = VmRSS(srv.pid); err != nil {
		return res, srv.wrap(err)
	}

	topic := o.Topic
	if srv.mode == ModeNATSWS {
		topic = subj
	}

	f, err := startFleet(fleetOptions{procOpts: p, Sys: sys, Target: srv.target, Mode: srv.mode, Topic: topic,
		N: o.N, Workers: o.Workers, Concurrency: o.Concurrency, Retries: 2, StatusEvery: 20 * time.Millisecond, Log: o.Log, Deflate: srv.deflate})
	if err != nil {
		return res, err
	}
	defer f.close()
	fmt.Fprintf(o.Log, "%s: %d workers joining %d subscribers to %s\n", sys, len(f.workers), o.N, topic)
	if err := f.pumpUntil(ctx, 0, false, "joining", func() bool { return f.allReady(false) }); err != nil {
		return res, srv.wrap(fmt.Errorf("joining: %w", err))
	}
	res.JoinS = time.Since(f.started).Seconds()
	fmt.Fprintf(o.Log, "%s: %d joined in %.1fs (%d refusals retried)\n", sys, o.N, res.JoinS, f.sum(func(s *workerState) int64 { return s.refused }))

	pub, err := newPublisher(srv, o.Topic, subj, o.Payload)
	if err != nil {
		return res, srv.wrap(fmt.Errorf("publisher: %w", err))
	}
	defer pub.close()

	// Warm-up: one message must reach every subscriber.
	if err := pub.publish(); err != nil {
		return res, err
	}
	if err := pub.flush(60 * time.Second); err != nil {
		return res, srv.wrap(fmt.Errorf("publisher flush: %w", err))
	}
	n := int64(o.N)
	if err := f.pumpUntil(ctx, 60*time.Second, false, "warm-up", func() bool { return f.delivered() >= n }); err != nil {
		return res, srv.wrap(fmt.Errorf("warm-up message reached %d of %d subscribers: %w", f.delivered(), n, err))
	}
	if err := f.pumpUntil(ctx, time.Second, false, "", func() bool { return false }); err != nil && ctx.Err() != nil {
		return res, err
	}
	if res.RSS, err = VmRSS(srv.pid); err != nil {
		return res, srv.wrap(err)
	}
	res.RSSPerConn = float64(res.RSS-res.RSSBefore) / float64(o.N)

	if o.Rate > 0 {
		fmt.Fprintf(o.Log, "%s: publishing %g msg/s for %s\n", sys, o.Rate, o.Duration)
		ph, err := fanoutPhase(ctx, o, srv, f, pub, false)
		if err != nil {
			return res, srv.wrap(fmt.Errorf("rate phase: %w", err))
		}
		res.Rate = ph
		logPhase(o.Log, sys, "rate", ph)
	}
	if o.Saturate {
		fmt.Fprintf(o.Log, "%s: saturating (window %d messages) for %s\n", sys, o.Window, o.Duration)
		ph, err := fanoutPhase(ctx, o, srv, f, pub, true)
		if err != nil {
			return res, srv.wrap(fmt.Errorf("saturation phase: %w", err))
		}
		res.Saturate = ph
		logPhase(o.Log, sys, "saturate", ph)
	}
	if res.RSSEnd, err = VmRSS(srv.pid); err != nil {
		return res, srv.wrap(err)
	}
	if err := f.pumpNow(); err != nil {
		return res, err
	}
	res.ClientsLost = f.lost()
	return res, nil
}

func logPhase(w io.Writer, sys, name string, ph *FanoutPhase) {
	fmt.Fprintf(w, "%s: %s: %d/%d delivered, %.0f deliveries/s, p50 %.2f ms, p99 %.2f ms, %.2f µs server CPU/delivery\n",
		sys, name, ph.Delivered, ph.Expected, ph.DeliveriesPerS, ph.Latency.P50, ph.Latency.P99, ph.ServerCPUPerDelivery)
}

// payload builds benchmark payloads: JSON carrying the publish time
// (TimestampKey) and a sequence number, padded to size bytes.
type payload struct {
	size int
	seq  int64
	buf  []byte
}

func (p *payload) next() []byte {
	p.seq++
	b := append(p.buf[:0], TimestampKey...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, p.seq, 10)
	b = append(b, `,"pad":"`...)
	for len(b) < p.size-2 {
		b = append(b, 'x')
	}
	b = append(b, `"}`...)
	p.buf = b
	return b
}

// publisher is how a benchmark publishes into the system under test:
// NATS (Fabric, nats-server), Centrifugo's HTTP API, or the floor's feed.
type publisher interface {
	publish() error
	// flush returns once the server has taken everything published.
	flush(timeout time.Duration) error
	close()
}

// natsPublisher publishes with NATS core publish.
type natsPublisher struct {
	nc      *nats.Conn
	subject string
	p       payload
}

func (p *natsPublisher) publish() error { return p.nc.Publish(p.subject, p.p.next()) }

func (p *natsPublisher) flush(timeout time.Duration) error { return p.nc.FlushTimeout(timeout) }

func (p *natsPublisher) close() { p.nc.Close() }

// newPublisher connects a publisher to srv for topic (subj: its NATS
// subject).
func newPublisher(srv *sut, topic, subj string, size int) (publisher, error) {
	switch srv.sys {
	case SystemCentrifugo, SystemCentrifugoDeflate:
		return newCentrifugoPublisher(srv.apiURL, topic, size), nil
	case SystemFloor:
		return dialFloorPublisher(srv.pubAddr, size)
	}
	nc, err := nats.Connect(srv.natsURL, nats.Name("fabric-bench-publisher"), nats.MaxReconnects(0))
	if err != nil {
		return nil, err
	}
	return &natsPublisher{nc: nc, subject: subj, p: payload{size: size}}, nil
}

func fanoutPhase(ctx context.Context, o FanoutOptions, srv *sut, f *fleet, pub publisher, saturate bool) (*FanoutPhase, error) {
	ph := &FanoutPhase{}
	n := int64(o.N)
	base, baseHist, err := f.stats(ctx)
	if err != nil {
		return nil, err
	}
	cpu0, err := CPUTime(srv.pid)
	if err != nil {
		return nil, err
	}
	ccpu0 := f.cpu()
	self0, _ := CPUTime(os.Getpid())
	busy0, _ := MachineBusy()
	t0 := time.Now()
	end := t0.Add(o.Duration)
	if !saturate {
		total := int64(o.Rate*o.Duration.Seconds() + 0.5)
		interval := time.Duration(float64(time.Second) / o.Rate)
		for i := int64(0); i < total; i++ {
			if err := sleepCtx(ctx, time.Until(t0.Add(time.Duration(i)*interval))); err != nil {
				return nil, err
			}
			if err := pub.publish(); err != nil {
				return nil, err
			}
			ph.Published++
			if err := f.pumpNow(); err != nil {
				return nil, err
			}
		}
	} else {
		for time.Now().Before(end) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err := f.pumpNow(); err != nil {
				return nil, err
			}
			done := (f.delivered() - base) / n // messages every subscriber has (about)
			if ph.Published-done < int64(o.Window) {
				if err := pub.publish(); err != nil {
					return nil, err
				}
				ph.Published++
				continue
			}
			time.Sleep(time.Millisecond)
		}
	}
	pubEnd := time.Now()
	// An overloaded server answers the flush's PING only after fanning
	// out everything before it: wait for it as long as for the drain,
	// but go on to measure what was delivered either way.
	if err := pub.flush(60 * time.Second); err != nil {
		fmt.Fprintf(o.Log, "%s: publisher flush: %v\n", srv.sys, err)
	}
	ph.PublishRate = float64(ph.Published) / pubEnd.Sub(t0).Seconds()
	ph.Expected = ph.Published * n

	// Drain: wait for every delivery, or until none arrived for 3 s.
	last, lastChange := f.delivered(), time.Now()
	drainErr := f.pumpUntil(ctx, 60*time.Second, false, "draining", func() bool {
		d := f.delivered()
		if d != last {
			last, lastChange = d, time.Now()
		}
		return d-base >= ph.Expected || time.Since(lastChange) > 3*time.Second
	})
	if drainErr != nil && ctx.Err() != nil {
		return nil, drainErr
	}
	cpu1, err := CPUTime(srv.pid)
	if err != nil {
		return nil, err
	}
	ccpu1 := f.cpu()
	self1, _ := CPUTime(os.Getpid())
	busy1, _ := MachineBusy()
	ph.OtherCPUS = max(0, ((busy1 - busy0) - (cpu1 - cpu0) - (ccpu1 - ccpu0) - (self1 - self0)).Seconds())
	tEnd := lastChange
	if tEnd.Before(pubEnd) {
		tEnd = pubEnd
	}
	total, hist, err := f.stats(ctx)
	if err != nil {
		return nil, err
	}
	ph.Delivered = total - base
	h := hist.Sub(baseHist)
	ph.Latency = latencyOf(h)
	// At least the publishing window: at a fixed rate, the last message
	// goes out one interval before its end.
	ph.ElapsedS = max(tEnd.Sub(t0), o.Duration).Seconds()
	if ph.Expected > 0 {
		ph.DeliveredRatio = float64(ph.Delivered) / float64(ph.Expected)
	}
	if ph.ElapsedS > 0 {
		ph.DeliveriesPerS = float64(ph.Delivered) / ph.ElapsedS
	}
	ph.ServerCPUS = (cpu1 - cpu0).Seconds()
	if ph.Delivered > 0 {
		ph.ServerCPUPerDelivery = float64((cpu1 - cpu0).Microseconds()) / float64(ph.Delivered)
		ph.ClientCPUPerDelivery = float64((ccpu1 - ccpu0).Microseconds()) / float64(ph.Delivered)
	}
	return ph, nil
}

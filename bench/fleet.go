package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procOpts says how to start child processes: the fabric binary and its
// environment.
type procOpts struct {
	Exe string
	Env []string
}

// startProc starts exe with args; stdout goes to stdout (nil: discarded).
// With stdin non-nil, *stdin is set to a pipe to the child's standard
// input; otherwise that is /dev/null. The child is SIGKILLed if this
// process dies first.
func startProc(p procOpts, stdin *io.WriteCloser, stdout io.Writer, args ...string) (*child, error) {
	cmd := exec.Command(p.Exe, args...)
	cmd.Env = p.Env
	if stdin != nil {
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		*stdin = in
	}
	if stdout == nil {
		stdout = io.Discard
	}
	cmd.Stdout = stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// eachSystem measures each system in turn with one; a failure names the
// system, and the timeout when that was the cause. What was measured
// before a failure is returned with it.
func eachSystem[S any](ctx context.Context, bench string, systems []string, timeout time.Duration, one func(sys string) (S, error)) ([]S, error) {
	var out []S
	for _, sys := range systems {
		r, err := one(sys)
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (timeout %s)", err, timeout)
			}
			return out, fmt.Errorf("%s %s: %w", bench, sys, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// ratios are system A's figures over system B's, by name; a zero
// denominator leaves the ratio out.
type ratios map[string]float64

func (r ratios) add(name string, x, y float64) {
	if y != 0 {
		r[name] = x / y
	}
}

// sut is a started system under test.
type sut struct {
	*child
	sys     string
	pid     int
	target  string // ws:// URL for the workers
	natsURL string // NATS client URL for the publisher
	apiURL  string // Centrifugo: HTTP API base URL
	pubAddr string // floor: feed address
	mode    string // worker mode
	dir     string
	deflate bool // workers offer permessage-deflate (SystemFabricDeflate, SystemCentrifugoDeflate)
}

func (s *sut) stop() {
	if s == nil {
		return
	}
	s.kill()
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// wrap adds the server's exit status and stderr to err if it has exited.
func (s *sut) wrap(err error) error {
	if err != nil && s.exited() {
		return fmt.Errorf("%w; server exited (%v): %s", err, s.child.err, s.stderr.String())
	}
	return err
}

// startServer starts sys (SystemFabric: `fabric serve` with its embedded
// NATS on a client port; SystemNATSWS: nats-server with a WebSocket and a
// client listener) and waits until both ports accept connections.
func startServer(ctx context.Context, p procOpts, sys string, extra []string) (*sut, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	natsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &sut{sys: sys, natsURL: fmt.Sprintf("nats://127.0.0.1:%d", natsPort)}
	kind, exe, other := strings.Cut(sys, "@")
	if other && kind == SystemFabric {
		// fabric@/path/to/binary: another build of fabric serve (say the
		// commit before a change), measured in the same run.
		p.Exe = exe
	}
	switch kind {
	case SystemFabric, SystemFabricDeflate:
		if kind == SystemFabricDeflate {
			extra, s.deflate = append(extra, "--compression"), true
		}
		s.dir, err = os.MkdirTemp("", "fabric-bench-")
		if err != nil {
			return nil, err
		}
		args := append([]string{"serve",
			"--listen", "127.0.0.1:" + strconv.Itoa(port),
			"--ops-listen", "off",
			"--nats-listen", "127.0.0.1:" + strconv.Itoa(natsPort),
			"--data-dir", s.dir,
			"--log-level", "warn",
			// Every client of a worker shares its loopback source
			// address: a per-address cap would measure itself.
			"--max-connections-per-ip", "0"}, extra...)
		s.child, err = startProc(p, nil, nil, args...)
		if err != nil {
			os.RemoveAll(s.dir)
			return nil, err
		}
		s.target = fmt.Sprintf("ws://127.0.0.1:%d/socket/websocket?vsn=2.0.0", port)
		s.mode = ModePhoenix
	case SystemCentrifugo, SystemCentrifugoDeflate:
		s.deflate = kind == SystemCentrifugoDeflate
		bin, err := CentrifugoBinary(ctx, true, os.Stderr)
		if err != nil {
			return nil, err
		}
		if s.dir, err = os.MkdirTemp("", "fabric-bench-centrifugo-"); err != nil {
			return nil, err
		}
		cfg := filepath.Join(s.dir, "config.json")
		if err := os.WriteFile(cfg, centrifugoConfig(port, s.deflate), 0o600); err != nil {
			os.RemoveAll(s.dir)
			return nil, err
		}
		s.child, err = startProc(procOpts{Exe: bin, Env: p.Env}, nil, nil, "--config", cfg)
		if err != nil {
			os.RemoveAll(s.dir)
			return nil, err
		}
		s.target = fmt.Sprintf("ws://127.0.0.1:%d/connection/websocket", port)
		s.apiURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		s.mode = ModeCentrifugo
		natsPort = port // no NATS port: wait for the HTTP one twice
	case SystemFloor:
		s.child, err = startProc(p, nil, nil, "bench", "floor-server", "--host", "127.0.0.1",
			"--port", strconv.Itoa(port), "--feed-port", strconv.Itoa(natsPort))
		if err != nil {
			return nil, err
		}
		s.target = fmt.Sprintf("ws://127.0.0.1:%d/socket/websocket?vsn=2.0.0", port)
		s.pubAddr = "127.0.0.1:" + strconv.Itoa(natsPort)
		s.mode = ModePhoenix
	case SystemNATSWS:
		s.child, err = startProc(p, nil, nil, "bench", "nats-ws-server", "--host", "127.0.0.1",
			"--port", strconv.Itoa(port), "--nats-port", strconv.Itoa(natsPort))
		if err != nil {
			return nil, err
		}
		s.target = fmt.Sprintf("ws://127.0.0.1:%d/", port)
		s.mode = ModeNATSWS
	default:
		return nil, fmt.Errorf("unknown system %q", sys)
	}
	s.pid = s.cmd.Process.Pid
	for _, addr := range []string{"127.0.0.1:" + strconv.Itoa(port), "127.0.0.1:" + strconv.Itoa(natsPort)} {
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if s.exited() || ctx.Err() != nil {
				s.stop()
				return nil, s.wrap(fmt.Errorf("%s did not listen on %s", sys, addr))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return s, nil
}

// fleetOptions configures a set of client worker processes.
type fleetOptions struct {
	procOpts
	Sys         string // for log lines
	Target      string
	Mode        string
	Topic       string
	N           int
	Workers     int
	Concurrency int
	Retries     int
	StatusEvery time.Duration
	Deflate     bool // clients offer permessage-deflate
	Log         io.Writer
	// ResumeWant > 0 starts resume workers (resumeclients.go) expecting
	// that many missed messages per connection.
	ResumeWant int
}

// workerState is what the fleet knows about one worker, from its reports.
type workerState struct {
	joined, failed, closed, dialErrors, delivered int64
	refused                                       int64
	joinNanos                                     int64
	joinHist                                      [][2]int64
	ready, failedOut, done                        bool
	stats                                         *Report // last "stats" answer
	statsSeq                                      int
	dropped                                       bool
	resumed                                       *Report // the "resumed" report
}

// fleet is a set of running client workers. Its methods are called from
// one goroutine.
type fleet struct {
	o       fleetOptions
	workers []*child
	stdins  []io.WriteCloser
	state   []workerState
	reports chan workerReport
	stop    chan struct{}
	stopped bool
	started time.Time
}

// startFleet starts o.Workers workers at once, splitting o.N connections
// among them, each on its own source address 127.0.0.2, .3, ….
func startFleet(o fleetOptions) (*fleet, error) {
	if o.Log == nil {
		o.Log = io.Discard
	}
	f := &fleet{o: o, reports: make(chan workerReport, 256), stop: make(chan struct{})}
	per, extra := o.N/o.Workers, o.N%o.Workers
	offset := 0
	f.started = time.Now()
	for i := 0; i < o.Workers; i++ {
		n := per
		if i < extra {
			n++
		}
		if n == 0 {
			continue
		}
		pr, pw := io.Pipe()
		var inW io.WriteCloser
		args := []string{"bench", "clients",
			"--target", o.Target,
			"--n", strconv.Itoa(n),
			"--offset", strconv.Itoa(offset),
			"--source", fmt.Sprintf("127.0.0.%d", 2+i),
			"--mode", o.Mode,
			"--control"}
		if o.Deflate {
			args = append(args, "--deflate")
		}
		if o.Topic != "" {
			args = append(args, "--topic", o.Topic)
		}
		if o.Concurrency > 0 {
			args = append(args, "--concurrency", strconv.Itoa(o.Concurrency))
		}
		args = append(args, "--retries", strconv.Itoa(o.Retries))
		if o.ResumeWant > 0 {
			args = append(args, "--resume-want", strconv.Itoa(o.ResumeWant))
		}
		if o.StatusEvery > 0 {
			args = append(args, "--status-every", o.StatusEvery.String())
		}
		w, err := startProc(o.procOpts, &inW, pw, args...)
		if err != nil {
			f.close()
			return nil, err
		}
		idx := len(f.workers)
		f.workers = append(f.workers, w)
		f.stdins = append(f.stdins, inW)
		f.state = append(f.state, workerState{})
		go readReports(idx, pr, f.reports, f.stop)
		go func() { <-w.done; pw.Close() }()
		offset += n
	}
	return f, nil
}

func (f *fleet) close() {
	if f.stopped {
		return
	}
	f.stopped = true
	close(f.stop) // unblock readers first: a blocked pipe would stall cmd.Wait
	for _, in := range f.stdins {
		in.Close()
	}
	for _, w := range f.workers {
		w.kill()
	}
}

// handle applies one report. It returns an error for a worker that exits
// or reports an error, unless tolerate is set (then the worker is marked
// failed out and its counts are kept).
func (f *fleet) handle(r workerReport, tolerate bool) error {
	st := &f.state[r.worker]
	if r.eof {
		st.done = true
		if tolerate && st.failedOut {
			return nil
		}
		w := f.workers[r.worker]
		<-w.done
		return fmt.Errorf("client worker %d exited (%v): %s", r.worker, w.err, w.stderr.String())
	}
	switch r.Type {
	case "progress":
		st.joined, st.failed, st.dialErrors, st.refused = r.Joined, r.Failed, r.DialErrors, r.Refused
	case "ready":
		st.joined, st.dialErrors, st.refused, st.joinNanos, st.joinHist = r.Joined, r.DialErrors, r.Refused, r.JoinNanos, r.JoinHist
		st.ready = true
	case "error":
		st.joined, st.failed, st.dialErrors, st.refused, st.joinNanos = r.Joined, r.Failed, r.DialErrors, r.Refused, r.JoinNanos
		st.failedOut = true
		if !tolerate {
			return fmt.Errorf("client worker %d: %s", r.worker, r.Error)
		}
	case "status":
		st.closed, st.delivered = r.Closed, r.Delivered
	case "dropped":
		st.dropped = true
	case "resumed":
		rep := r.Report
		st.resumed = &rep
	case "stats":
		st.closed, st.delivered = r.Closed, r.Delivered
		rep := r.Report
		st.stats = &rep
		st.statsSeq++
	}
	return nil
}

// pumpUntil consumes reports until cond() holds, ctx is done or timeout
// passes (0: no own timeout), logging progress every 5 s if label is set.
func (f *fleet) pumpUntil(ctx context.Context, timeout time.Duration, tolerate bool, label string, cond func() bool) error {
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("timed out after %s", timeout)
		case <-tick.C:
			if label != "" {
				fmt.Fprintf(f.o.Log, "%s: %s: %d joined, %d delivered\n", f.o.Sys, label, f.sum(func(s *workerState) int64 { return s.joined }), f.delivered())
			}
		case r := <-f.reports:
			if err := f.handle(r, tolerate); err != nil {
				return err
			}
		}
	}
	return nil
}

// pumpNow applies the reports already queued, without waiting.
func (f *fleet) pumpNow() error {
	for {
		select {
		case r := <-f.reports:
			if err := f.handle(r, false); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

func (f *fleet) sum(get func(*workerState) int64) int64 {
	var n int64
	for i := range f.state {
		n += get(&f.state[i])
	}
	return n
}

func (f *fleet) delivered() int64 {
	return f.sum(func(s *workerState) int64 { return s.delivered })
}

func (f *fleet) lost() int64 { return f.sum(func(s *workerState) int64 { return s.closed }) }

// allReady reports whether every worker finished joining (or, with
// tolerate, gave up after failures).
func (f *fleet) allReady(tolerate bool) bool {
	for _, s := range f.state {
		if !s.ready && !(tolerate && s.failedOut) {
			return false
		}
	}
	return true
}

// command sends cmd to every worker.
func (f *fleet) command(cmd string) error {
	for i, in := range f.stdins {
		if _, err := io.WriteString(in, cmd+"\n"); err != nil {
			return fmt.Errorf("worker %d: %s: %w", i, cmd, err)
		}
	}
	return nil
}

// stats asks every worker for its counters and latency histogram and
// returns the totals.
func (f *fleet) stats(ctx context.Context) (int64, Counts, error) {
	want := make([]int, len(f.state))
	for i, in := range f.stdins {
		want[i] = f.state[i].statsSeq + 1
		if _, err := io.WriteString(in, "stats\n"); err != nil {
			return 0, nil, fmt.Errorf("asking worker %d for stats: %w", i, err)
		}
	}
	err := f.pumpUntil(ctx, 10*time.Second, false, "", func() bool {
		for i := range f.state {
			if f.state[i].statsSeq < want[i] {
				return false
			}
		}
		return true
	})
	if err != nil {
		return 0, nil, fmt.Errorf("worker stats: %w", err)
	}
	var n int64
	h := NewCounts()
	for i := range f.state {
		n += f.state[i].stats.Delivered
		h.AddSparse(f.state[i].stats.Hist)
	}
	return n, h, nil
}

// cpu is the workers' total CPU time so far.
func (f *fleet) cpu() time.Duration {
	var t time.Duration
	for _, w := range f.workers {
		if d, err := CPUTime(w.cmd.Process.Pid); err == nil {
			t += d
		}
	}
	return t
}

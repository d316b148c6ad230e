package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Systems measured by IdleBench.
const (
	SystemFabric = "fabric"
	SystemNATSWS = "nats-ws"
	// SystemCentrifugo is Centrifugo (CentrifugoVersion, memory engine).
	SystemCentrifugo = "centrifugo"
	// SystemFloor is one write(2) per delivery and nothing else (floor.go).
	SystemFloor = "floor"
)

// IdleOptions configures `fabric bench idle`.
type IdleOptions struct {
	Exe     string        // binary providing `serve`, `bench nats-ws-server` and `bench clients`
	ExeEnv  []string      // environment for child processes
	N       int           // connections per system
	Workers int           // client worker processes
	Settle  time.Duration // wait before each RSS reading
	Samples int           // RSS samples (1 s apart) per reading; the min is kept
	Timeout time.Duration // whole run
	Systems []string      // default: fabric, nats-ws
	// Topic is the Phoenix topic the Fabric clients join ("%d" = index mod
	// 100); the nats-ws clients subscribe to the subject Fabric maps it to.
	// Default DefaultIdleTopic: the default configuration, history and
	// presence; EphemeralIdleTopic has neither (the same work as a NATS SUB).
	Topic string
	// FabricFlags are extra `fabric serve` flags.
	FabricFlags []string
	Log         io.Writer // progress messages
}

// idleTopic is what a worker of mode joins for topic.
func idleTopic(topic, mode string) string {
	if topic == "" {
		topic = DefaultIdleTopic
	}
	if mode == ModeNATSWS {
		return "fabric." + strings.Replace(topic, ":", ".", 1)
	}
	return topic
}

// IdleResult is one system's measurement.
type IdleResult struct {
	System      string
	Topic       string
	N           int
	RSSBefore   int64 // bytes, VmRSS of the server after settling with no clients
	RSSAfter    int64 // bytes, min of the samples with N joined clients
	JoinTime    time.Duration
	ClientsLost int64
}

// BytesPerConn is (RSSAfter-RSSBefore)/N.
func (r IdleResult) BytesPerConn() float64 {
	if r.N == 0 {
		return 0
	}
	return float64(r.RSSAfter-r.RSSBefore) / float64(r.N)
}

// IdleBench measures each system in turn and returns the results in order.
func IdleBench(ctx context.Context, o IdleOptions) ([]IdleResult, error) {
	if o.N <= 0 || o.Workers <= 0 {
		return nil, fmt.Errorf("idle: --n and --workers must be positive")
	}
	if (o.N+o.Workers-1)/o.Workers > 5000 {
		return nil, fmt.Errorf("idle: %d connections over %d workers is more than 5000 per worker (fd limit); add --workers", o.N, o.Workers)
	}
	if o.Workers > 250 {
		return nil, fmt.Errorf("idle: at most 250 workers")
	}
	if o.Samples <= 0 {
		o.Samples = 3
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if len(o.Systems) == 0 {
		o.Systems = []string{SystemFabric, SystemNATSWS}
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	var out []IdleResult
	for _, sys := range o.Systems {
		r, err := idleOne(ctx, o, sys)
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (timeout %s)", err, o.Timeout)
			}
			return out, fmt.Errorf("idle %s: %w", sys, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// child is a started process whose stderr (and optionally stdout) is kept.
type child struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

func (c *child) kill() {
	if c == nil || c.cmd.Process == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 64<<10 {
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.TrimSpace(s.b.String())
}

func idleOne(ctx context.Context, o IdleOptions, sys string) (IdleResult, error) {
	res := IdleResult{System: sys, Topic: o.Topic, N: o.N}
	p := procOpts{Exe: o.Exe, Env: o.ExeEnv}
	var flags []string
	if strings.HasPrefix(sys, SystemFabric) {
		flags = o.FabricFlags
	}
	srv, err := startServer(ctx, p, sys, flags)
	if err != nil {
		return res, err
	}
	defer srv.stop()
	pid, target, mode, serverErr := srv.pid, srv.target, srv.mode, srv.wrap
	fmt.Fprintf(o.Log, "%s: pid %d listening on %s; settling %s\n", sys, pid, target, o.Settle)
	if err := sleepCtx(ctx, o.Settle); err != nil {
		return res, err
	}
	if res.RSSBefore, err = minRSS(ctx, pid, o.Samples); err != nil {
		return res, serverErr(err)
	}

	start := time.Now()
	reports := make(chan workerReport, 64)
	stopReports := make(chan struct{})
	var workers []*child
	defer func() {
		close(stopReports) // unblock readers first: a blocked pipe would stall cmd.Wait
		for _, w := range workers {
			w.kill()
		}
	}()
	per, extra := o.N/o.Workers, o.N%o.Workers
	offset := 0
	for i := 0; i < o.Workers; i++ {
		n := per
		if i < extra {
			n++
		}
		if n == 0 {
			continue
		}
		pr, pw := io.Pipe()
		w, err := startProc(p, nil, pw, "bench", "clients",
			"--target", target,
			"--n", strconv.Itoa(n),
			"--offset", strconv.Itoa(offset),
			"--source", fmt.Sprintf("127.0.0.%d", 2+i),
			"--mode", mode,
			"--topic", idleTopic(o.Topic, mode),
			fmt.Sprintf("--deflate=%v", srv.deflate))
		if err != nil {
			return res, err
		}
		workers = append(workers, w)
		go readReports(i, pr, reports, stopReports)
		go func() { <-w.done; pw.Close() }()
		offset += n
	}
	fmt.Fprintf(o.Log, "%s: %d workers opening %d connections\n", sys, len(workers), o.N)

	// Wait until every worker is ready.
	ready := 0
	joined := make([]int64, len(workers))
	lost := make([]int64, len(workers))
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for ready < len(workers) {
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("waiting for clients: %w", ctx.Err())
		case <-tick.C:
			fmt.Fprintf(o.Log, "%s: %d/%d joined\n", sys, sum(joined), o.N)
		case r := <-reports:
			if r.eof {
				w := workers[r.worker]
				<-w.done
				return res, serverErr(fmt.Errorf("client worker %d exited (%v): %s", r.worker, w.err, w.stderr.String()))
			}
			joined[r.worker] = r.Joined
			switch r.Type {
			case "error":
				return res, serverErr(fmt.Errorf("client worker %d: %s", r.worker, r.Error))
			case "ready":
				ready++
			}
		}
	}
	res.JoinTime = time.Since(start)
	fmt.Fprintf(o.Log, "%s: %d joined in %s; settling %s\n", sys, sum(joined), res.JoinTime.Round(time.Millisecond), o.Settle)

	// Settle with clients connected, keep consuming reports.
	deadline := time.After(o.Settle)
	for settled := false; !settled; {
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-deadline:
			settled = true
		case r := <-reports:
			if r.eof {
				return res, serverErr(fmt.Errorf("client worker %d exited while idle", r.worker))
			}
			lost[r.worker] = r.Closed
		}
	}
	if res.RSSAfter, err = minRSS(ctx, pid, o.Samples); err != nil {
		return res, serverErr(err)
	}
	// Drain reports queued during sampling.
	for drained := false; !drained; {
		select {
		case r := <-reports:
			if !r.eof {
				lost[r.worker] = r.Closed
			}
		default:
			drained = true
		}
	}
	res.ClientsLost = sum(lost)
	if res.ClientsLost > 0 {
		return res, fmt.Errorf("%d connections were closed before the measurement ended", res.ClientsLost)
	}
	fmt.Fprintf(o.Log, "%s: RSS %d -> %d bytes: %.0f B/conn\n", sys, res.RSSBefore, res.RSSAfter, res.BytesPerConn())
	return res, nil
}

type workerReport struct {
	Report
	worker int
	eof    bool
}

func readReports(worker int, r io.Reader, out chan<- workerReport, stop <-chan struct{}) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var rep Report
		if json.Unmarshal(sc.Bytes(), &rep) != nil {
			continue
		}
		select {
		case out <- workerReport{Report: rep, worker: worker}:
		case <-stop:
			_, _ = io.Copy(io.Discard, r) // unblock the worker; its output is no longer wanted
			return
		}
	}
	select {
	case out <- workerReport{worker: worker, eof: true}:
	case <-stop:
	}
}

func sum(xs []int64) int64 {
	var s int64
	for _, x := range xs {
		s += x
	}
	return s
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// minRSS samples VmRSS n times, a second apart, and returns the smallest.
func minRSS(ctx context.Context, pid, n int) (int64, error) {
	var best int64 = -1
	for i := 0; i < n; i++ {
		if i > 0 {
			if err := sleepCtx(ctx, time.Second); err != nil {
				return 0, err
			}
		}
		v, err := VmRSS(pid)
		if err != nil {
			return 0, err
		}
		if best < 0 || v < best {
			best = v
		}
	}
	return best, nil
}

// VmRSS reads /proc/<pid>/status VmRSS in bytes.
func VmRSS(pid int) (int64, error) { return procStatus(pid, "VmRSS:") }

// VmHWM returns a process's peak resident set size so far, in bytes.
func VmHWM(pid int) (int64, error) { return procStatus(pid, "VmHWM:") }

func procStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) != 2 || f[1] != "kB" {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				break
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New(field + " not found in /proc/" + strconv.Itoa(pid) + "/status")
}

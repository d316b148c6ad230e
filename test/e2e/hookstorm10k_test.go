package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fabric-rt/fabric/internal/testkit"
	"github.com/fabric-rt/fabric/internal/testkit/proctest"
)

// procKB reads a field (VmRSS, VmHWM) of /proc/<pid>/status in KiB.
func procKB(t testing.TB, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// The reconnect storm at full size (FABRIC_HOOK_STORM=1, task hook-storm):
// 10,000 clients resume at once against a `fabric serve` process, first
// with joins decided by the token alone (the baseline), then with the join
// hook on and --hook-concurrency 64 in front of a Go service that takes
// 2 ms per join. The gateway runs in its own process so that its memory
// (VmRSS, VmHWM) is its own, and so that 10,000 connections' two ends do
// not share one file-descriptor limit.
func TestJoinHookStorm10k(t *testing.T) {
	if os.Getenv("FABRIC_HOOK_STORM") != "1" {
		t.Skip("10,000 connections for a few minutes: FABRIC_HOOK_STORM=1 (task hook-storm)")
	}
	n := 10_000
	if v, err := strconv.Atoi(os.Getenv("FABRIC_HOOK_STORM_N")); err == nil && v > 0 {
		n = v
	}
	const limit = 64
	bin := proctest.FabricBinary(t)
	for _, hooked := range []bool{false, true} {
		name := map[bool]string{false: "baseline (token only)", true: "join hook"}[hooked]
		t.Run(name, func(t *testing.T) {
			joins := "token"
			extra := ""
			if hooked {
				joins, extra = "request", "\n    join_timeout: 5s"
			}
			cfg := filepath.Join(t.TempDir(), "fabric.yaml")
			yaml := "namespaces:\n  arena:\n    history: true\n    max_age: 1h\n    joins: " + joins + extra + "\n"
			if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			listen, ops, natsAddr := proctest.FreeAddrOn(t, "127.0.0.1"), proctest.FreeAddrOn(t, "127.0.0.1"), proctest.FreeAddrOn(t, "127.0.0.1")
			cmd := exec.Command(bin, "serve", "--config", cfg, "--listen", listen, "--ops-listen", ops, "--nats-listen", natsAddr,
				"--data-dir", t.TempDir(), "--log-level", "warn", "--hook-concurrency", strconv.Itoa(limit),
				"--max-accept-rate", "0", "--max-connections-per-ip", "0", "--max-connections-per-user", "0", "--join-rate", "0")
			cmd.Env = proctest.Env()
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_ = cmd.Process.Signal(os.Interrupt)
				done := make(chan struct{})
				go func() { _ = cmd.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(30 * time.Second):
					_ = cmd.Process.Kill()
					<-done
				}
			})
			eventually(t, time.Minute, "the gateway ready", func() bool {
				r, err := http.Get("http://" + ops + "/readyz")
				if err != nil {
					return false
				}
				r.Body.Close()
				return r.StatusCode == 200
			})
			var svc *stormService
			if hooked {
				svc = startStormService(t, "nats://"+natsAddr, "fabric_join.arena.>", 2*time.Millisecond, 0)
			}
			wsURL := "ws://" + listen + "/socket/websocket?vsn=2.0.0"
			cs := stormClients(t, wsURL, 1)
			status, resp, err := cs[0].JoinWait("arena:0", nil, wait)
			var head struct{ Epoch, Offset string }
			if err != nil || status != "ok" || json.Unmarshal(resp, &head) != nil {
				t.Fatalf("first join: %s %s %v", status, resp, err)
			}
			nc := testkit.Connect(t, "nats://"+natsAddr)
			for i := range 100 {
				m := nats.NewMsg(fmt.Sprintf("fabric.arena.%d", i))
				m.Header.Set("Fabric-Event", "goal")
				m.Data = []byte(`{"missed":true}`)
				if err := nc.PublishMsg(m); err != nil {
					t.Fatal(err)
				}
			}
			_ = nc.Flush()
			clients := stormClients(t, wsURL, n)
			pid := cmd.Process.Pid
			rssBefore := procKB(t, pid, "VmRSS")
			start := time.Now()
			out := resumeStorm(t, clients, func(i int) string { return fmt.Sprintf("arena:%d", i%100) },
				map[string]any{"epoch": head.Epoch, "offset": head.Offset}, 5*time.Minute)
			took := time.Since(start)
			time.Sleep(time.Second)
			rss, hwm := procKB(t, pid, "VmRSS"), procKB(t, pid, "VmHWM")
			total := 0
			// An answer is ok or a documented refusal: timeout (the hook
			// did not answer within join_timeout) or unavailable (the
			// gateway's own join, after the hook, did not finish within
			// its 5 s: the history fetches of 10,000 resumes on a loaded
			// machine, the baseline's as much as the hook's).
			for k, v := range out {
				if k != "ok" && k != "timeout" && k != "unavailable" {
					t.Errorf("outcome %q (%d)", k, v)
				}
				total += v
			}
			line := fmt.Sprintf("%s: %d clients resumed at once; answers %v in %.2fs; gateway VmRSS %d MiB before the storm (%d clients connected), %d MiB 1 s after the last answer, peak VmHWM %d MiB",
				name, n, out, took.Seconds(), rssBefore>>10, n, rss>>10, hwm>>10)
			if svc != nil {
				line += fmt.Sprintf("; service: %d requests, at most %d at once (--hook-concurrency %d)", svc.received.Load(), svc.max.Load(), limit)
				if svc.max.Load() > limit {
					t.Errorf("the service had %d requests at once, over %d", svc.max.Load(), limit)
				}
			}
			t.Log(line)
			if total != n {
				t.Fatalf("%d answers for %d clients; gateway stderr: %s", total, n, stderr.String())
			}
		})
	}
}

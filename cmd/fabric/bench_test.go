package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	fbench "github.com/fabric-rt/fabric/bench"
)

// benchChildEnv makes the test binary act as the fabric binary when the
// benchmark starts it as a child process (serve, bench clients, …).
const benchChildEnv = "BENCH_TEST_RUN_AS_FABRIC"

func init() {
	if os.Getenv(benchChildEnv) == "1" {
		// os.Args[1:] are the child's fabric arguments.
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
}

func TestBenchIdleSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server and client processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := fbench.IdleBench(ctx, fbench.IdleOptions{
		Exe:     exe,
		ExeEnv:  append(os.Environ(), benchChildEnv+"=1"),
		N:       200,
		Workers: 2,
		Settle:  500 * time.Millisecond,
		Samples: 1,
		Timeout: 50 * time.Second,
		Log:     &log,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(res) != 2 || res[0].System != fbench.SystemFabric || res[1].System != fbench.SystemNATSWS {
		t.Fatalf("results = %+v", res)
	}
	for _, r := range res {
		if r.N != 200 || r.RSSBefore <= 0 || r.RSSAfter <= 0 || r.BytesPerConn() <= 0 {
			t.Errorf("%s: %+v, %.0f B/conn", r.System, r, r.BytesPerConn())
		}
		t.Logf("%s: %.0f B/conn (RSS %d -> %d)", r.System, r.BytesPerConn(), r.RSSBefore, r.RSSAfter)
	}
}

func TestBenchUsageErrors(t *testing.T) {
	var out, errb bytes.Buffer
	if err := bench(nil, nil, &out, &errb); err == nil {
		t.Error("bench with no subcommand: want an error")
	}
	if err := bench([]string{"nope"}, nil, &out, &errb); err == nil || !strings.Contains(err.Error(), "unknown subcommand") {
		t.Errorf("unknown subcommand: err = %v", err)
	}
	if err := bench([]string{"idle", "--n", "20000", "--workers", "2"}, os.Environ(), &out, &errb); err == nil || !strings.Contains(err.Error(), "5000 per worker") {
		t.Errorf("too many per worker: err = %v", err)
	}
}

// Every subcommand declares its flags without a clash (a duplicate flag
// panics) and answers -h with its own usage.
func TestBenchSubcommandHelp(t *testing.T) {
	for _, sub := range []string{"idle", "fanout", "storm", "plot", "clients", "nats-ws-server"} {
		var out, errb bytes.Buffer
		err := func() (err error) {
			defer func() {
				if p := recover(); p != nil {
					t.Fatalf("bench %s -h panicked: %v", sub, p)
				}
			}()
			return bench([]string{sub, "-h"}, nil, &out, &errb)
		}()
		if !strings.Contains(out.String()+errb.String(), "-") {
			t.Errorf("bench %s -h printed no usage (err %v)", sub, err)
		}
	}
}

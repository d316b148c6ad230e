package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/fabric-rt/fabric/auth"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of serve.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "fabric ") {
		t.Fatalf("version: %d %q %q", code, out.String(), errb.String())
	}
}

func TestUnknownCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) ||
		strings.Contains(errb.String(), "did you mean") {
		t.Fatalf("%d %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"srve"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "srve" (did you mean "serve"?)`) {
		t.Fatalf("%d %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"bench", "fanot"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), `unknown subcommand "fanot" (did you mean "fanout"?)`) {
		t.Fatalf("%d %q", code, errb.String())
	}
}

// A mistyped flag gets one line with a suggestion and a pointer to -h, not
// the hundred lines of the flag list.
func TestFlagMistakeShortUsage(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--listn", "x"}, "fabric serve: unknown flag --listn (did you mean --listen?)"},
		{[]string{"publish", "--evnt", "x", "room:a"}, "fabric publish: unknown flag --evnt (did you mean --event?)"},
		{[]string{"token", "--chanels", "room:*"}, "fabric token: unknown flag --chanels (did you mean --channels?)"},
		{[]string{"nats", "--jetstrem"}, "fabric nats: unknown flag --jetstrem (did you mean --jetstream?)"},
		{[]string{"bench", "fanout", "--worker", "2"}, "fabric bench fanout: unknown flag --worker (did you mean --workers?)"},
		{[]string{"bench", "idle", "--n"}, "fabric bench idle: flag --n needs a value"},
	}
	for _, tc := range cases {
		var out, errb bytes.Buffer
		code := run(tc.args, &out, &errb)
		lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
		if code != 2 || lines[0] != tc.want || len(lines) > 4 || !strings.Contains(errb.String(), tc.args[0]+" ") {
			t.Errorf("%q: exit %d, stderr:\n%s\nwant exit 2, first line %q, at most 4 lines", tc.args, code, errb.String(), tc.want)
		}
	}
}

// "fabric" alone lists every command and every bench subcommand, and each
// listed one exists (answers -h).
func TestUsageListsEveryCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	for _, cmd := range [][]string{{"serve"}, {"publish"}, {"token"}, {"nats"}, {"bench", "idle"}, {"bench", "fanout"},
		{"bench", "storm"}, {"bench", "plot"}, {"version"}} {
		if !regexp.MustCompile(`(?m)^  ` + strings.Join(cmd, " ") + ` +\S`).MatchString(errb.String()) {
			t.Errorf("usage does not list %q:\n%s", cmd, errb.String())
		}
		var o, e bytes.Buffer
		if code := run(append(cmd, "-h"), &o, &e); code != 0 {
			t.Errorf("%q -h: exit %d, stderr %q", cmd, code, e.String())
		}
	}
}

func TestServeConfigErrors(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		environ []string
		want    string
	}{
		{"unknown env", nil, []string{"FABRIC_LISTN=x"}, "unknown environment variable FABRIC_LISTN (did you mean FABRIC_LISTEN?)"},
		{"unknown flag", []string{"--nope"}, nil, "unknown flag --nope"},
		{"mistyped flag", []string{"--listn", "x"}, nil, "unknown flag --listn (did you mean --listen?)"},
		{"open on network", []string{"--listen", "0.0.0.0:0", "--nats-listen", "off", "--ops-listen", "off"}, nil, "--allow-anonymous"},
		{"bad log level", []string{"--log-level", "loud"}, nil, "log-level"},
		{"stray argument", []string{"extra"}, nil, "unexpected arguments"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb syncBuffer
			err := serve(context.Background(), tc.args, tc.environ, &out, &errb)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// serve starts with flags, env and defaults combined, answers on its
// listeners, and stops cleanly when its context ends (SIGINT/SIGTERM).
func TestServeRunsAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, []string{"--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"},
			[]string{"FABRIC_NATS_LISTEN=off", "FABRIC_DATA_DIR=" + t.TempDir(), "FABRIC_LOG_LEVEL=warn"}, &out, &errb)
	}()
	re := regexp.MustCompile(`demo page http://([0-9.:]+)/`)
	deadline := time.Now().Add(20 * time.Second)
	var addr string
	for addr == "" {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			addr = m[1]
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited early: %v\n%s", err, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start: %q %q", out.String(), errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get("http://" + addr + "/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("demo page: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
	if strings.Contains(errb.String(), "level=ERROR") {
		t.Fatalf("errors logged: %s", errb.String())
	}
}

// The YAML file's namespaces section configures history per namespace.
func TestServeNamespacesFromConfigFile(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/fabric.yaml"
	yaml := "listen: 127.0.0.1:0\nops-listen: \"off\"\nnats-listen: \"off\"\nlog-level: warn\n" +
		"namespaces:\n  game:\n    history: true\n    max_age: 30m\n    max_msgs_per_channel: 500\n  chat:\n    history: false\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, []string{"--config", path}, []string{"FABRIC_DATA_DIR=" + dir}, &out, &errb)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "Fabric is running") {
		select {
		case err := <-done:
			t.Fatalf("serve: %v %s", err, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("not started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The stream exists on disk with the configured limits.
	if _, err := os.Stat(dir + "/nats/jetstream/$G/streams/FABRIC_game"); err != nil {
		t.Fatalf("stream FABRIC_game not created: %v", err)
	}
	if _, err := os.Stat(dir + "/nats/jetstream/$G/streams/FABRIC_room"); err == nil {
		t.Fatal("the default room namespace was created although the file replaced the defaults")
	}

	bad := dir + "/bad.yaml"
	os.WriteFile(bad, []byte("namespaces:\n  game:\n    history: true\n    max_agee: 1h\n"), 0o644)
	err := serve(context.Background(), []string{"--config", bad}, nil, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "max_agee") {
		t.Fatalf("unknown namespace key: %v", err)
	}
	// A value that cannot work names the namespace and the key, before
	// anything starts.
	for yaml, want := range map[string]string{
		"namespaces:\n  game:\n    join_timeout: 2s\n":                       `config: namespace "game": join_scope and join_timeout only apply with joins: request`,
		"namespaces:\n  game:\n    pushes: reply\n":                          `config: namespace "game": pushes must be "publish" or "request"`,
		"namespaces:\n  game:\n    presence: true\n    presence_ttl: 10ms\n": `config: namespace "game": presence_ttl must be at least 1s`,
		"namespaces:\n  game:\n    max_age: 1h\n":                            `config: namespace "game": retention, replicas, allow_purge and allow_delete only apply with history: true`,
	} {
		os.WriteFile(bad, []byte(yaml), 0o644)
		if err := serve(context.Background(), []string{"--config", bad}, nil, &out, &errb); err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %q", yaml, err, want)
		}
	}
}

func TestTokenMintsAVerifiableToken(t *testing.T) {
	secret := strings.Repeat("s", 32)
	var out, errb bytes.Buffer
	code := run([]string{"token", "--sub", "u1", "--channels", "room:*,user:u1", "--publish", "room:*", "--jwt-secret", secret}, &out, &errb)
	if code != 0 {
		t.Fatalf("token: %d %s", code, errb.String())
	}
	v, err := auth.New(auth.Config{Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(context.Background(), strings.TrimSpace(out.String()))
	if err != nil || c.Subject != "u1" || !c.CanJoin("room:lobby") || c.CanJoin("game:1") || !c.CanPublish("room:x") {
		t.Fatalf("claims %+v %v", c, err)
	}
	if code := run([]string{"token"}, &out, &errb); code == 0 {
		t.Fatal("token without a key succeeded")
	}
}

// A connection token names its user: the gateway refuses one without sub,
// so minting one is refused too. Join and publisher tokens need none.
func TestTokenRefusesEmptySub(t *testing.T) {
	secret := strings.Repeat("s", 32)
	var out, errb bytes.Buffer
	if code := run([]string{"token", "--sub", "", "--channels", "room:*", "--jwt-secret", secret}, &out, &errb); code == 0 || out.Len() != 0 {
		t.Fatalf("token --sub \"\": exit %d, printed %q", code, out.String())
	}
	if !strings.Contains(errb.String(), "--sub") {
		t.Fatalf("error does not say which flag: %s", errb.String())
	}
	out.Reset()
	if code := run([]string{"token", "--sub", "", "--typ", "publisher", "--jwt-secret", secret}, &out, &errb); code != 0 {
		t.Fatalf("publisher token without sub: exit %d: %s", code, errb.String())
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natstest"
	"github.com/fabric-rt/fabric/nats/wire"
	"github.com/fabric-rt/fabric/publisher"
)

// publishEnv is a real nats-server with Fabric's streams, reachable over
// TCP like `fabric serve`'s embedded server.
type publishEnv struct {
	url string
	nc  *nats.Conn
	st  jetstream.Stream
}

func startPublishEnv(t *testing.T) *publishEnv {
	t.Helper()
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	b, err := natsbroker.New(nc, natsbroker.Config{Streams: map[string]natsbroker.Stream{"room": {MaxAge: time.Hour, MaxMsgsPerChannel: 10_000}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	st, err := js.Stream(ctx, wire.StreamName("room"))
	if err != nil {
		t.Fatal(err)
	}
	return &publishEnv{url: s.ClientURL(), nc: nc, st: st}
}

func (e *publishEnv) msg(t *testing.T, seq uint64) *jetstream.RawStreamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := e.st.GetMsg(ctx, seq)
	if err != nil {
		t.Fatalf("message %d: %v", seq, err)
	}
	return m
}

func runPublish(t *testing.T, args, environ []string, stdin string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	if environ == nil {
		environ = []string{}
	}
	err := publish(ctx, args, environ, strings.NewReader(stdin), &out, &errb)
	return out.String(), err
}

var offsetLine = regexp.MustCompile(`^offset=(\d+) epoch=([a-z0-9]+)( duplicate=true)?\n$`)

func TestPublishCommandNATS(t *testing.T) {
	e := startPublishEnv(t)
	file := filepath.Join(t.TempDir(), "msg.bin")
	os.WriteFile(file, []byte{0, 1, 2}, 0o600)

	cases := []struct {
		name    string
		args    []string
		environ []string
		stdin   string
		offset  string
		data    string
		event   string
		ct      string
	}{
		{"argument", []string{"--nats-url", e.url, "--event", "new_msg", "room:lobby", `{"body":"hi"}`}, nil, "", "1", `{"body":"hi"}`, "new_msg", ""},
		{"file", []string{"--nats-url", e.url, "--file", file, "--content-type", "application/octet-stream", "room:lobby"}, nil, "", "2", "\x00\x01\x02", "message", "application/octet-stream"},
		{"stdin dash", []string{"--nats-url", e.url, "room:lobby", "-"}, nil, `{"from":"stdin"}`, "3", `{"from":"stdin"}`, "message", ""},
		{"stdin file dash", []string{"--file", "-", "room:lobby"}, []string{"FABRIC_NATS_URL=" + e.url, "FABRIC_EVENT=env_event"}, `{"n":4}`, "4", `{"n":4}`, "env_event", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := runPublish(t, c.args, c.environ, c.stdin)
			m := offsetLine.FindStringSubmatch(out)
			if err != nil || m == nil || m[1] != c.offset {
				t.Fatalf("output %q, error %v; want offset %s", out, err, c.offset)
			}
			if m[2] != e.st.CachedInfo().Config.Metadata["fabric_epoch"] {
				t.Fatalf("epoch %s", m[2])
			}
			seq, _ := strconv.ParseUint(c.offset, 10, 64)
			sm := e.msg(t, seq)
			if sm.Subject != "fabric.room.lobby" || string(sm.Data) != c.data ||
				sm.Header.Get("Fabric-Event") != c.event || sm.Header.Get("Content-Type") != c.ct {
				t.Fatalf("stored %s %q %v", sm.Subject, sm.Data, sm.Header)
			}
		})
	}

	t.Run("idempotency key", func(t *testing.T) {
		args := []string{"--nats-url", e.url, "--idempotency-key", "cli-1", "room:idem", "{}"}
		first, err := runPublish(t, args, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		second, err := runPublish(t, args, nil, "")
		m1, m2 := offsetLine.FindStringSubmatch(first), offsetLine.FindStringSubmatch(second)
		if err != nil || m1 == nil || m2 == nil || m1[1] != m2[1] || m1[3] != "" || m2[3] == "" {
			t.Fatalf("first %q, second %q, %v", first, second, err)
		}
	})

	t.Run("ephemeral", func(t *testing.T) {
		sub, _ := e.nc.SubscribeSync("fabric.chat.x")
		e.nc.Flush()
		out, err := runPublish(t, []string{"--nats-url", e.url, "--event", "typing", "chat:x", "{}"}, nil, "")
		if err != nil || out != "published (ephemeral)\n" {
			t.Fatalf("%q %v", out, err)
		}
		if m, err := sub.NextMsg(10 * time.Second); err != nil || m.Header.Get("Fabric-Event") != "typing" {
			t.Fatalf("delivered %v %v", m, err)
		}
	})
}

func TestPublishCommandHTTP(t *testing.T) {
	e := startPublishEnv(t)
	nc, err := nats.Connect(e.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p, err := publisher.New(nc, publisher.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	h, err := publisher.NewHandler(publisher.HandlerConfig{Publisher: p, Authenticate: publisher.APIKeys([]string{"k"})})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(publisher.PathPublish, h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for i, protobuf := range []bool{false, true} {
		args := []string{"--api-url", srv.URL, "--api-key", "k", "--event", "new_msg", "--content-type", "application/json"}
		if protobuf {
			args = append(args, "--protobuf")
		}
		out, err := runPublish(t, append(args, "room:api", `{"via":"http"}`), nil, "")
		m := offsetLine.FindStringSubmatch(out)
		if err != nil || m == nil || m[1] != string(rune('1'+i)) {
			t.Fatalf("protobuf=%v: %q %v", protobuf, out, err)
		}
		sm := e.msg(t, uint64(1+i))
		if string(sm.Data) != `{"via":"http"}` || sm.Header.Get("Fabric-Event") != "new_msg" || sm.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("stored %q %v", sm.Data, sm.Header)
		}
	}
	// Stdin through the API, key from the environment.
	out, err := runPublish(t, []string{"--api-url", srv.URL + "/", "room:api", "-"}, []string{"FABRIC_API_KEY=k"}, "\xff\xfe")
	if err != nil || !offsetLine.MatchString(out) {
		t.Fatalf("stdin via API: %q %v", out, err)
	}
	out, err = runPublish(t, []string{"--api-url", srv.URL, "--api-key", "k", "--idempotency-key", "h1", "room:api", "{}"}, nil, "")
	again, err2 := runPublish(t, []string{"--api-url", srv.URL, "--api-key", "k", "--idempotency-key", "h1", "room:api", "{}"}, nil, "")
	if err != nil || err2 != nil || !strings.HasSuffix(again, " duplicate=true\n") || strings.TrimSuffix(again, " duplicate=true\n") != strings.TrimSuffix(out, "\n") {
		t.Fatalf("idempotent via API: %q %q %v %v", out, again, err, err2)
	}
	// The server's refusal is the command's error.
	if _, err := runPublish(t, []string{"--api-url", srv.URL, "--api-key", "wrong", "room:api", "{}"}, nil, ""); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong key: %v", err)
	}
	// A key the gateway would refuse is refused before anything is sent,
	// as in NATS mode.
	if _, err := runPublish(t, []string{"--api-url", srv.URL, "--api-key", "k", "--idempotency-key", "a\tb", "room:api", "{}"}, nil, ""); !errors.Is(err, publisher.ErrInvalidOption) {
		t.Fatalf("bad idempotency key: %v", err)
	}
}

func TestPublishCommandErrors(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		environ []string
		want    string
	}{
		{"no topic", nil, nil, "want TOPIC"},
		{"too many args", []string{"room:a", "1", "2"}, nil, "want TOPIC"},
		{"unknown flag", []string{"--nope", "room:a"}, nil, "unknown flag --nope"},
		{"unknown env", []string{"room:a"}, []string{"FABRIC_EVNT=x"}, "unknown environment variable FABRIC_EVNT (did you mean FABRIC_EVENT?)"},
		{"payload and file", []string{"--file", "x", "room:a", "{}"}, nil, "not both"},
		{"missing file", []string{"--file", "/nonexistent/payload", "room:a"}, nil, "no such file"},
		{"both targets", []string{"--nats-url", "nats://127.0.0.1:1", "--api-url", "http://127.0.0.1:1", "room:a"}, nil, "not both"},
		{"protobuf without api", []string{"--protobuf", "room:a"}, nil, "--api-url only"},
		{"bad api url", []string{"--api-url", "ftp://x", "room:a"}, nil, "http:// or https://"},
		{"invalid topic", []string{"--nats-url", "nats://127.0.0.1:1", "room::a"}, nil, "invalid topic: empty segment"},
		{"reserved event", []string{"--nats-url", "nats://127.0.0.1:1", "--event", "phx_close", "room:a"}, nil, "invalid event"},
		{"nothing listening", []string{"--nats-url", "nats://user:pw@127.0.0.1:1", "--timeout", "1s", "room:a"}, nil, "connect to nats://redacted@127.0.0.1:1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := runPublish(t, c.args, c.environ, "")
			if err == nil || !strings.Contains(err.Error(), c.want) || out != "" {
				t.Fatalf("got %q, %v; want an error containing %q", out, err, c.want)
			}
			if strings.Contains(err.Error(), "pw") {
				t.Fatalf("credentials in the error: %v", err)
			}
		})
	}
	if _, err := runPublish(t, []string{"-h"}, nil, ""); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
}

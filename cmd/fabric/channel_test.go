package main

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func runChannel(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	err := channelCmd(ctx, args, []string{}, &out, &errb)
	return out.String(), err
}

func TestChannelCommand(t *testing.T) {
	e := startPublishEnv(t)
	js, _ := jetstream.New(e.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub := func(subj string) uint64 {
		t.Helper()
		m := nats.NewMsg(subj)
		m.Data = []byte(`{}`)
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	pub("fabric.room.lobby")
	pub("fabric.room.lobby")
	other := pub("fabric.room.other")

	if out, err := runChannel(t, "rm", "--nats-url", e.url, "room:lobby", "1"); err != nil || !strings.HasPrefix(out, "removed room:lobby offset 1") {
		t.Fatalf("rm: %q %v", out, err)
	}
	if out, err := runChannel(t, "clear", "--nats-url", e.url, "room:lobby"); err != nil || !strings.HasPrefix(out, "cleared room:lobby") {
		t.Fatalf("clear: %q %v", out, err)
	}
	// The marks are in the stream, on the channel's mark subject.
	st, _ := js.Stream(ctx, "FABRIC_room")
	last, err := st.GetLastMsgForSubject(ctx, "fabric.room.=3A.lobby")
	if err != nil || last.Header.Get("Fabric-Mod") != "clear" {
		t.Fatalf("clear mark: %+v %v", last, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"rm", "--nats-url", e.url, "room:lobby", "x"}, "positive decimal"},
		{[]string{"rm", "--nats-url", e.url, "room:lobby", "0"}, "positive decimal"},
		{[]string{"rm", "--nats-url", e.url, "room:lobby"}, "want TOPIC and OFFSET"},
		{[]string{"rm", "--nats-url", e.url, "room:lobby", strings.Repeat("9", 3)}, "no message"},
		{[]string{"rm", "--nats-url", e.url, "room:lobby", strconv.FormatUint(other, 10)}, "no message"},
		{[]string{"clear", "--nats-url", e.url, "chat:x"}, "no history"},
		{[]string{"clear", "--nats-url", e.url, "room:*"}, "wildcard"},
		{[]string{"purge", "room:x"}, "want clear or rm"},
		{[]string{"clear", "--nats-url", e.url, "--nats-password", "pw", "room:x"}, "--nats-password needs --nats-user"},
	} {
		if _, err := runChannel(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

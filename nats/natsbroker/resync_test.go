package natsbroker_test

import (
	"testing"

	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// The broker catches its channels up by itself after nats.go reconnected:
// nobody calls Resync. A mark whose republished copy it missed is applied
// once the connection is back.
func TestResyncsItselfOnReconnect(t *testing.T) {
	e, ch := missedMark(t)
	if err := e.nc.ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	if r := recvReset(t, ch); r.Offset < 2 {
		t.Fatalf("reset at %d, before the mark", r.Offset)
	}
}

// A Link that reports the connection back (without a reconnect) or a
// stream back has the broker catch up too.
func TestResyncsItselfWhenTheLinkSaysSo(t *testing.T) {
	e := setupHistory(t, natsbroker.Stream{})
	e.jsPublish(t, "fabric.room.lobby", "m", `{}`)
	sub, ch := collect(t, e.env, "room:lobby")
	defer sub.Unsubscribe()
	e.b.StopWatchingMarks()
	l := &watchLink{}
	e.b.SetLink(l)
	if l.up == nil || l.streamUp == nil {
		t.Fatal("the broker did not watch the link")
	}
	m, err := natsbroker.NewModerator(e.pub, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ClearChannel(ctx(t), "room:lobby"); err != nil {
		t.Fatal(err)
	}
	l.streamUp("FABRIC_room")
	if r := recvReset(t, ch); r.Offset < 2 {
		t.Fatalf("reset at %d, before the mark", r.Offset)
	}
}

// watchLink is an always-up natsbroker.Watcher that hands the test the
// broker's callbacks.
type watchLink struct {
	up       func()
	streamUp func(string)
}

func (*watchLink) Err() error             { return nil }
func (*watchLink) StreamErr(string) error { return nil }
func (l *watchLink) Watch(up func(), streamUp func(string)) {
	l.up, l.streamUp = up, streamUp
}

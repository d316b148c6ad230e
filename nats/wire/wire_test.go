package wire_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/nats/wire"
)

func info(name string, created time.Time, md map[string]string) *jetstream.StreamInfo {
	return &jetstream.StreamInfo{Config: jetstream.StreamConfig{Name: name, Metadata: md}, Created: created}
}

func TestEpoch(t *testing.T) {
	t1 := time.Unix(1_700_000_000, 123)
	t2 := t1.Add(time.Second)
	c1, c2 := strconv.FormatInt(t1.UnixNano(), 10), strconv.FormatInt(t2.UnixNano(), 10)
	stream := wire.StreamName("room")
	derived1, _, _ := wire.Epoch(info(stream, t1, nil), "")
	derived2, _, _ := wire.Epoch(info(stream, t2, nil), "")
	other, _, _ := wire.Epoch(info(wire.StreamName("chat"), t1, nil), "")
	if derived1 == "" || derived1 == derived2 || derived1 == other {
		t.Fatalf("derived epochs must name one incarnation of one stream: %q %q %q", derived1, derived2, other)
	}
	for _, c := range []struct {
		name   string
		md     map[string]string
		known  string
		epoch  string
		record bool
	}{
		{"recorded for this incarnation", map[string]string{wire.MetaEpoch: "e1", wire.MetaCreated: c1}, "", "e1", false},
		{"recorded, caller knew another", map[string]string{wire.MetaEpoch: "e1", wire.MetaCreated: c1}, c2, "e1", false},
		{"re-added from a saved config", map[string]string{wire.MetaEpoch: "e1", wire.MetaCreated: c2}, "", derived1, true},
		{"legacy gateway's epoch", map[string]string{wire.MetaEpoch: "old"}, "", "old", true},
		{"legacy epoch, same incarnation known", map[string]string{wire.MetaEpoch: "old"}, c1, "old", true},
		{"legacy epoch on a new incarnation", map[string]string{wire.MetaEpoch: "old"}, c2, derived1, true},
		{"unstamped", map[string]string{}, "", derived1, true},
	} {
		epoch, created, record := wire.Epoch(info(stream, t1, c.md), c.known)
		if epoch != c.epoch || created != c1 || record != c.record {
			t.Errorf("%s: got (%q, %q, %v), want (%q, %q, %v)", c.name, epoch, created, record, c.epoch, c1, c.record)
		}
	}
}

// The derived epoch is part of the contract: gateways of different
// versions and the publisher library must compute the same one, so a
// change of the derivation is a breaking change this test makes visible.
func TestDerivedEpochIsStable(t *testing.T) {
	got, _, _ := wire.Epoch(info("FABRIC_room", time.Unix(0, 1_700_000_000_000_000_000), nil), "")
	const want = "7w24ktqcvtaetoip" // sha256(name NUL created)[:10], base32, lower case
	if got != want {
		t.Fatalf("derived epoch %q, want %q", got, want)
	}
}

package session

import (
	"testing"
	"unsafe"

	"github.com/fabric-rt/fabric/gateway/phoenix"
)

// TestRecordSizes keeps what every connection and every joined channel
// costs from growing unnoticed (docs/performance.md, "Where the memory
// goes"). A change that must grow them updates the bounds and the doc.
func TestRecordSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		size, max uintptr
	}{
		{"Session", unsafe.Sizeof(Session{}), 128},
		{"channel", unsafe.Sizeof(channel{}), 48},
		{"bucket", unsafe.Sizeof(bucket{}), 8},
	} {
		if c.size > c.max {
			t.Errorf("%s is %d bytes, over %d", c.name, c.size, c.max)
		}
	}
}

// A join instance keeps its join_ref as a number only when the string can
// be rebuilt exactly; every other ref is kept as sent, and both compare
// and echo as the client wrote them.
func TestJoinRefKeptExactly(t *testing.T) {
	refs := []phoenix.Ref{
		phoenix.R("0"), phoenix.R("1"), phoenix.R("42"), phoenix.R("999999999"),
		phoenix.R("1000000000"), phoenix.R("4294967296"), // too long for the number
		phoenix.R("007"), phoenix.R("00"), phoenix.R("-1"), phoenix.R("+1"), phoenix.R("1a"), phoenix.R(" 1"),
		phoenix.R(""), phoenix.R("x"), phoenix.RawRef("1"), phoenix.RawRef(`"1"`), phoenix.Null,
	}
	for _, jr := range refs {
		for _, ref := range []phoenix.Ref{jr, phoenix.R("3"), phoenix.RawRef("3"), phoenix.Null} {
			for _, hooked := range []bool{false, true} {
				ch := newChannel(nil, "room:1", jr, ref, "", hooked)
				if got := ch.joinRef(); got != jr {
					t.Errorf("join_ref %+v kept as %+v", jr, got)
				}
				if got := ch.joinMsgRef(); got != ref {
					t.Errorf("join_ref %+v, ref %+v: the reply's ref is %+v", jr, ref, got)
				}
				if hooked && ch.more == nil {
					t.Errorf("a hooked join has no side record")
				}
				for _, other := range refs {
					if got, want := ch.isJoinRef(other), other == jr; got != want {
						t.Errorf("join_ref %+v: isJoinRef(%+v) = %v, want %v", jr, other, got, want)
					}
				}
			}
		}
	}
	// The common join (phoenix.js: join_ref and ref alike, small, no
	// params, no hook) needs no side record.
	if ch := newChannel(nil, "room:1", phoenix.R("12"), phoenix.R("12"), "", false); ch.more != nil || ch.jref != 13 {
		t.Errorf("a phoenix.js join keeps %+v, jref %d", ch.more, ch.jref)
	}
	if ch := newChannel(nil, "room:1", phoenix.R("12"), phoenix.R("12"), `{"a":1}`, false); string(ch.paramsJSON()) != `{"a":1}` {
		t.Errorf("params kept as %q", ch.paramsJSON())
	}
}

// The one-number bucket behaves as a level that refills at rate up to
// burst: full at first, emptied by takes, refilled by time, in debt after
// a take bigger than what it holds.
func TestBucket(t *testing.T) {
	const sec = int64(1e9)
	var b bucket
	now := 100 * sec
	near := func(what string, got, want float64) {
		t.Helper()
		if got < want-1e-6 || got > want+1e-6 {
			t.Errorf("%s: %v tokens, want %v", what, got, want)
		}
	}
	near("new", b.tokens(now, 2, 4), 4)
	for range 4 {
		b.take(now, 1, 2)
	}
	near("after 4 takes", b.tokens(now, 2, 4), 0)
	near("half a second later", b.tokens(now+sec/2, 2, 4), 1)
	near("long after", b.tokens(now+10*sec, 2, 4), 4)
	b.take(now+10*sec, 10, 2) // bigger than the burst: debt
	near("in debt", b.tokens(now+10*sec, 2, 4), -6)
	near("debt paid", b.tokens(now+15*sec, 2, 4), 4)
}

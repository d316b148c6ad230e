package ws

import (
	"math"
	"testing"
	"time"
)

// A stamp keeps every time a connection can have exactly, in the same
// wheel slot; times out of its range are kept as long past or never.
func TestStamp(t *testing.T) {
	now := time.Now().Unix()
	for _, u := range []int64{now, now + 1, now + 63, now + 64, now + 3600, now + 10*365*24*3600} {
		s := toStamp(u)
		if s == 0 || s.unix() != u {
			t.Errorf("%d kept as %d (%d)", u, s.unix(), s)
		}
		if s.unix()%wheelSlots != u%wheelSlots {
			t.Errorf("%d moved to another wheel slot", u)
		}
	}
	if s := toStamp(0); s != 1 || s.unix() >= now {
		t.Errorf("a time long past kept as %d (%d)", s.unix(), s)
	}
	if s := toStamp(math.MaxInt64); s != math.MaxUint32 || s.unix() < now+100*365*24*3600 {
		t.Errorf("a time far ahead kept as %d (%d)", s.unix(), s)
	}
}

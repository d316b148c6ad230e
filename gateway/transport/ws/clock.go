package ws

import (
	"math"
	"time"
)

// stamp is a time a connection keeps (its last read, its deadline, its
// place on the timing wheel): whole seconds since clockBase in 32 bits
// rather than Unix seconds in 64, which keeps conn in the 96-byte size
// class. 0 means none; 136 years from the start of the process fit, and a
// later time is kept as the last one that does (never reached).
type stamp uint32

// clockBase is a multiple of wheelSlots, so that a time's wheel slot is
// the same in either clock, and lies before any time a connection keeps
// (a time before it is kept as clockBase+1: long past).
var clockBase = time.Now().Unix()&^(wheelSlots-1) - wheelSlots

// toStamp is the stamp of a time in Unix seconds (never 0).
func toStamp(unix int64) stamp {
	return stamp(min(max(unix-clockBase, 1), math.MaxUint32))
}

// unix is the stamp's time in Unix seconds.
func (s stamp) unix() int64 { return clockBase + int64(s) }

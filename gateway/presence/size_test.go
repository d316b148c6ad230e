package presence

import (
	"testing"
	"unsafe"
)

// TestStateSizes keeps what every channel and member costs from growing
// unnoticed: one channel per user has as many channels as connections
// (docs/presence.md, "How members are stored"). A change that must grow
// them updates the bounds, and the doc's numbers.
func TestStateSizes(t *testing.T) {
	for _, c := range []struct {
		name      string
		size, max uintptr
	}{
		{"chanState", unsafe.Sizeof(chanState{}), 144},
		{"local", unsafe.Sizeof(local{}), 64},
		{"members", unsafe.Sizeof(members{}), 16},
	} {
		if c.size > c.max {
			t.Errorf("%s is %d bytes, over %d", c.name, c.size, c.max)
		}
	}
}

package ws

import (
	"testing"
	"unsafe"
)

// TestConnSize keeps an idle connection's record within its 112-byte
// size class (docs/performance.md, "Where the memory goes"): one byte
// more costs every connection 16. A change that must grow it updates the
// bound and the doc.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 112 {
		t.Errorf("conn is %d bytes, over 112", n)
	}
}

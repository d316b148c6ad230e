package ws

import (
	"testing"
	"unsafe"
)

// TestConnSize keeps an idle connection's record within its 96-byte
// size class (docs/performance.md, "Where the memory goes"): one byte
// more costs every connection 16. A change that must grow it updates the
// bound and the doc.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 96 {
		t.Errorf("conn is %d bytes, over 96", n)
	}
}

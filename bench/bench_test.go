package bench

import (
	"os"
	"testing"
)

func TestVmRSS(t *testing.T) {
	v, err := VmRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if v < 1<<20 || v > 1<<40 {
		t.Fatalf("VmRSS = %d bytes, implausible", v)
	}
	if _, err := VmRSS(-1); err == nil {
		t.Error("VmRSS(-1): want an error")
	}
}

func TestBytesPerConn(t *testing.T) {
	r := IdleResult{N: 1000, RSSBefore: 10 << 20, RSSAfter: 10<<20 + 1000*512}
	if got := r.BytesPerConn(); got != 512 {
		t.Errorf("BytesPerConn = %v, want 512", got)
	}
	if got := (IdleResult{}).BytesPerConn(); got != 0 {
		t.Errorf("BytesPerConn with N=0 = %v, want 0", got)
	}
}

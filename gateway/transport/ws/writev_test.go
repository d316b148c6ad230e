package ws

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// writev sends a full queue's worth of frames (a join reply and a replay
// page of 100) in one call, in order, skipping empty buffers, and reports
// EAGAIN from a full socket as the error flush waits on.
func TestWritevOneCall(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	var bufs [][]byte
	var want []byte
	for i := 0; i < maxIovecs; i++ {
		b := bytes.Repeat([]byte{byte(i)}, 1+i%7)
		if i == 5 {
			b = nil
		}
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	n, err := writev(fds[0], bufs)
	if err != nil || n != len(want) {
		t.Fatalf("writev = %d, %v; want %d bytes", n, err, len(want))
	}
	got := make([]byte, len(want)+1)
	m, err := unix.Read(fds[1], got)
	if err != nil || !bytes.Equal(got[:m], want) {
		t.Fatalf("read %d bytes (%v), not what was written", m, err)
	}
	if n, err := writev(fds[0], [][]byte{nil}); n != 0 || err != nil {
		t.Fatalf("writev of nothing = %d, %v", n, err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	big := [][]byte{make([]byte, 1<<20)}
	for i := 0; ; i++ {
		if i == 1000 {
			t.Fatal("a socket nobody reads never filled")
		}
		if _, err := writev(fds[0], big); err != nil {
			if !errors.Is(err, unix.EAGAIN) {
				t.Fatalf("full socket: %v, want EAGAIN", err)
			}
			break
		}
	}
}

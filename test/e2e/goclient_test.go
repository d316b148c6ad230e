package e2e

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/clients/go/phx"
)

// Helpers for tests that take a client's view through the public Go
// client (clients/go); tests about exact frames use phxclient instead.

// goDial connects the Go client to a Phoenix endpoint (ws://host/socket).
func goDial(t *testing.T, endpoint string) *phx.Socket {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := phx.Dial(ctx, endpoint, phx.Options{})
	if err != nil {
		t.Fatalf("dial %s: %v", endpoint, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func goJoin(t *testing.T, s *phx.Socket, topic string, opts ...phx.ChannelOption) *phx.Channel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ch, err := s.Join(ctx, topic, nil, opts...)
	if err != nil {
		t.Fatalf("join %s: %v", topic, err)
	}
	return ch
}

// inbox records the messages a channel receives.
type inbox struct {
	mu   sync.Mutex
	msgs []phx.Message
}

func (b *inbox) add(m phx.Message) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
}

// waitN returns the first n messages once they are in, failing after wait.
func (b *inbox) waitN(t *testing.T, n int) []phx.Message {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		b.mu.Lock()
		got := len(b.msgs)
		if got >= n {
			out := append([]phx.Message(nil), b.msgs[:n]...)
			b.mu.Unlock()
			return out
		}
		b.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("%d messages, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// nextResume waits for a resume outcome.
func nextResume(t *testing.T, c <-chan phx.Resume) phx.Resume {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(wait):
		t.Fatal("no resume outcome")
		return phx.Resume{}
	}
}

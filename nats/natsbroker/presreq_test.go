package natsbroker_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natstest"
)

// Presence state requests share one inbox subscription per broker: many
// requests in flight add one subscription on the server, not one each,
// and every request gets exactly the answers to it.
func TestPresenceRequestsShareOneInbox(t *testing.T) {
	s := natstest.RunServer(t)
	newBroker := func() *natsbroker.Broker {
		b, err := natsbroker.New(natstest.Connect(t, s), natsbroker.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		return b
	}
	serving, asking := newBroker(), newBroker()
	// The serving gateway answers each request with the request's body.
	sub, err := serving.PresenceSubscribe(ctx(t), "room:lobby", func(req []byte, reply func([]byte) error) {
		if reply != nil {
			_ = reply(append([]byte("state for "), req...))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()

	before := s.NATS().NumSubscriptions()
	const n = 20
	// Generous: answers must come within it on a loaded machine too.
	window := 4 * time.Second
	var wg sync.WaitGroup
	answers := make([][]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := []byte("req " + strconv.Itoa(i))
			errs[i] = asking.PresenceRequest(context.Background(), "room:lobby", req, window, func(a []byte) bool {
				answers[i] = append(answers[i], string(a))
				return true
			})
		}()
	}
	time.Sleep(time.Second)
	during := s.NATS().NumSubscriptions()
	wg.Wait()
	if during > before+1 {
		t.Errorf("%d server subscriptions with %d requests in flight, want at most %d (one shared inbox)", during, n, before+1)
	}
	for i := range n {
		want := "state for req " + strconv.Itoa(i)
		if errs[i] != nil || len(answers[i]) != 1 || answers[i][0] != want {
			t.Errorf("request %d: %v, answers %q, want [%q]", i, errs[i], answers[i], want)
		}
	}
	// A canceled request returns its context's error.
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if err := asking.PresenceRequest(c, "room:lobby", []byte("x"), time.Second, func([]byte) bool { return true }); err != context.Canceled {
		t.Errorf("canceled request: %v", err)
	}
}

package natsbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natstest"
)

// Domain sends every JetStream request to that domain's API
// ($JS.<domain>.API): a domain nobody serves never gets its stream, and a
// name that cannot be a subject token is refused up front. The working
// case, across a real leaf-node link, is test/regions.
func TestDomainIsWhereStreamsLive(t *testing.T) {
	s := natstest.RunServer(t)
	nc := natstest.Connect(t, s)
	nss := map[string]natsbroker.Stream{"room": {}}
	if _, err := natsbroker.New(nc, natsbroker.Config{Streams: nss, Domain: "a.b"}); err == nil {
		t.Fatal("domain a.b accepted")
	}
	b, err := natsbroker.New(nc, natsbroker.Config{Streams: nss, Domain: "nowhere"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := b.EnsureStreams(ctx); err == nil {
		t.Fatal("streams created in a domain no server has: the requests went to the local JetStream")
	}
}

package natsbroker_test

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/fabric-rt/fabric/gateway/broker/brokertest"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// TestConformance holds the NATS adapter to the port's contract against an
// in-process nats-server, as gateway/broker/memory is.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Env {
		// Pushes and presence need no settings in the adapter: whether a
		// namespace routes or tracks them is the gateway's policy.
		e := setupHistory(t, natsbroker.Stream{AllowPurge: true})
		return brokertest.Env{
			Broker:     e.b,
			Ephemeral:  "chat",
			Persistent: "room",
			Pushes:     "rpc",
			Presence:   "presence",
			Purge: func(t *testing.T, topic string) {
				st, err := e.js.Stream(ctx(t), "FABRIC_room")
				if err != nil {
					t.Fatal(err)
				}
				if err := st.Purge(ctx(t), jetstream.WithPurgeSubject("fabric.room."+topic[len("room:"):])); err != nil {
					t.Fatal(err)
				}
			},
			// The broker recreates the stream it watches.
			Recreate: func(t *testing.T) {
				if err := e.js.DeleteStream(ctx(t), "FABRIC_room"); err != nil {
					t.Fatal(err)
				}
			},
		}
	})
}

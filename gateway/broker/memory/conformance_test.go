package memory_test

import (
	"testing"

	"github.com/fabric-rt/fabric/gateway/broker/brokertest"
	"github.com/fabric-rt/fabric/gateway/broker/memory"
)

// TestConformance holds the memory broker (with history) to the port's
// contract, as nats/natsbroker is.
func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Env {
		b := memory.NewHistory("room")
		return brokertest.Env{
			Broker:     b,
			Ephemeral:  "chat",
			Persistent: "room",
			Purge:      func(t *testing.T, topic string) { b.Stream("room").Purge(topic, 0, 0) },
			Recreate:   func(t *testing.T) { b.Recreate("room") },
		}
	})
}

// TestConformanceWithoutHistory: the plain Broker most gateway tests use
// keeps the delivery contract too.
func TestConformanceWithoutHistory(t *testing.T) {
	brokertest.Run(t, func(t *testing.T) brokertest.Env {
		return brokertest.Env{Broker: memory.New(), Ephemeral: "chat"}
	})
}

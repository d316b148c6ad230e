package gateway

import (
	"testing"

	"github.com/fabric-rt/fabric/gateway/transport/longpoll"
	"github.com/fabric-rt/fabric/gateway/transport/ws"
)

// The presence state cap follows the smaller per-connection output budget.
func TestPresenceStateCapIsHalfTheOutputBudget(t *testing.T) {
	for _, tc := range []struct {
		ws, lp, want int
	}{
		{0, 0, 128 << 10},
		{64 << 10, 0, 32 << 10},
		{4 << 20, 1 << 20, 512 << 10},
	} {
		got := presenceStateCap(Config{WS: ws.Config{MaxQueueBytes: tc.ws}, LongPoll: longpoll.Config{MaxBuffered: tc.lp}})
		if got != tc.want {
			t.Errorf("budgets %d/%d: cap %d, want %d", tc.ws, tc.lp, got, tc.want)
		}
	}
}

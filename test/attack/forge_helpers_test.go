package attack

import (
	"context"
	"fmt"
	"github.com/fabric-rt/fabric/internal/testkit"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/testkit/phxclient"
)

// Helpers of forge_test.go, named forge* so that other attack files can
// keep their own.

// forgeWait bounds every wait; generous for loaded CI machines.
const forgeWait = 10 * time.Second

const forgeSecret = "attack-suite-hs256-secret-32-bytes!"

// forgeFabric starts a Fabric with JWT authentication on loopback ports
// (embedded NATS, default namespaces: room:* keeps history and presence).
func forgeFabric(t *testing.T, mutate func(*app.Config)) *app.App {
	t.Helper()
	cfg := app.Config{
		Listen:          "127.0.0.1:0",
		OpsListen:       "off",
		NATSListen:      "127.0.0.1:0",
		DataDir:         t.TempDir(),
		LeaveGrace:      50 * time.Millisecond,
		JWTSecret:       forgeSecret,
		AllowQueryToken: true,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	a := testkit.StartApp(t, cfg)
	return a
}

// forgeToken mints an ordinary user's connection token.
func forgeToken(t *testing.T, sub string, channels, publish []string) string {
	t.Helper()
	tok, err := auth.Mint(auth.Config{Secret: []byte(forgeSecret)},
		auth.MintClaims{Subject: sub, Channels: channels, Publish: publish, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// forgeDial opens a raw v2 WebSocket client with token in the query.
func forgeDial(t *testing.T, a *app.App, token string) *phxclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), forgeWait)
	defer cancel()
	url := fmt.Sprintf("ws://%s/socket/websocket?vsn=2.0.0&token=%s", a.HTTPAddr(), token)
	c, err := phxclient.Dial(ctx, url, phoenix.V2, phxclient.Options{})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

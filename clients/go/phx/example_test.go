package phx_test

import (
	"context"
	"fmt"
	"log"
	"net/url"

	"github.com/fabric-rt/fabric/clients/go/phx"
)

// The example from the README (compiled, not run: it needs a server).
func Example() {
	ctx := context.Background()
	sock, err := phx.Dial(ctx, "wss://fabric.example.com/socket", phx.Options{
		Params: url.Values{"token": {"<jwt>"}},
	})
	if err != nil {
		log.Fatal(err) // a refused token is a *phx.HandshakeError (403)
	}
	defer sock.Close()
	ch, err := sock.Join(ctx, "room:lobby", nil,
		phx.On("new_msg", func(m phx.Message) { fmt.Printf("%s at %d\n", m.Payload, m.Offset) }),
		phx.OnResume(func(r phx.Resume) {
			if !r.Recovered { // history_gone, epoch_changed, offset_ahead
				log.Printf("missed messages after %d: %s", r.From.Offset, r.Reason)
			}
		}))
	if err != nil {
		log.Fatal(err)
	}
	reply, err := ch.Push(ctx, "new_msg", map[string]string{"body": "hi"})
	fmt.Println(string(reply.Response), err)
}

func ExamplePresence() {
	ctx := context.Background()
	sock, err := phx.Dial(ctx, "ws://localhost:4000/socket", phx.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer sock.Close()
	p := phx.NewPresence()
	p.OnJoin = func(key string, current, joined []phx.Meta) {
		if current == nil {
			fmt.Println(key, "arrived")
		}
	}
	p.OnLeave = func(key string, remaining, left []phx.Meta) {
		if len(remaining) == 0 {
			fmt.Println(key, "left")
		}
	}
	p.OnSync = func() { fmt.Println(len(p.List()), "online") }
	if _, err := sock.Join(ctx, "room:lobby", map[string]any{"user": "ada"}, phx.WithPresence(p)); err != nil {
		log.Fatal(err)
	}
}

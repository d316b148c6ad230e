// Command pushhandler is a minimal backend for client pushes routed over
// NATS — Phoenix's handle_in, written as a plain NATS service. Run Fabric
// with a namespace configured `pushes: request` (here: game), then:
//
//	go run ./examples/pushhandler --nats-url nats://127.0.0.1:4222
//
// A phoenix.js `channel.push("move", {x: 1})` on game:42 arrives here on
// fabric_in.game.42 with the event in the Fabric-Event header; the reply's
// body becomes the `.receive("ok", …)` response, or, with header
// Fabric-Status: error, the `.receive("error", …)` one.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"os"
	"os/signal"

	"github.com/nats-io/nats.go"
)

func main() {
	url := flag.String("nats-url", nats.DefaultURL, "NATS server")
	flag.Parse()
	nc, err := nats.Connect(*url)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = nc.Drain() }() // exiting anyway: nothing to do if draining fails
	// A queue group: run as many copies as you like; each push is handled once.
	_, err = nc.QueueSubscribe("fabric_in.game.>", "game-handlers", func(m *nats.Msg) {
		event := m.Header.Get("Fabric-Event")
		var move struct{ X, Y int }
		if event != "move" || json.Unmarshal(m.Data, &move) != nil {
			reply := nats.NewMsg(m.Reply)
			reply.Header.Set("Fabric-Status", "error")
			reply.Data = []byte(`{"reason":"bad move"}`)
			if err := m.RespondMsg(reply); err != nil {
				log.Print(err)
			}
			return
		}
		body, _ := json.Marshal(map[string]any{
			"accepted": true,
			"topic":    m.Header.Get("Fabric-Topic"),
			"user":     m.Header.Get("Fabric-Sub"),
			"x":        move.X, "y": move.Y,
		})
		if err := m.Respond(body); err != nil {
			log.Print(err)
		}
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("handling pushes on fabric_in.game.> at %s", nc.ConnectedUrlRedacted())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
}

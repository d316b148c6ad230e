// Command joinhook-go decides joins over NATS: Phoenix's join/3 as a plain NATS
// service. Run Fabric with a namespace `joins: request` (here: guild), then `go
// run ./examples/joinhook-go --nats-url nats://127.0.0.1:4222`. A join of guild:42
// arrives on fabric_join.guild.42 as a JSON JoinRequest (schema/proto/fabric/v1/
// hooks.proto); the JoinReply admits a member with the guild's state as join
// reply and role as assigns, or refuses with a reason.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"strings"

	"github.com/nats-io/nats.go"
)

var roles = map[string]map[string]string{"42": {"alice": "officer", "bob": "member"}} // guild → user → role

func main() {
	url := flag.String("nats-url", nats.DefaultURL, "NATS server")
	flag.Parse()
	nc, err := nats.Connect(*url)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := serve(nc); err != nil {
		log.Fatal(err)
	}
	select {} // until interrupted
}

// serve answers joins of guild:<id>; a queue group, so run as many as you like.
func serve(nc *nats.Conn) (*nats.Subscription, error) {
	return nc.QueueSubscribe("fabric_join.guild.*", "guild-joins", func(m *nats.Msg) {
		var req struct{ Topic, SubjectID string }
		reply := map[string]any{"ok": false, "reason": "not a member"} // anything unreadable: refused
		if json.Unmarshal(m.Data, &req) == nil {
			guild := strings.TrimPrefix(req.Topic, "guild:")
			if role, ok := roles[guild][req.SubjectID]; ok {
				reply = map[string]any{"ok": true, "response": map[string]any{"guild": guild, "members": len(roles[guild])},
					"assigns": map[string]any{"role": role}, "cacheTtlMs": 1000}
			}
		}
		if b, _ := json.Marshal(reply); m.Respond(b) != nil {
			log.Print("reply not sent: NATS connection closed")
		}
	})
}

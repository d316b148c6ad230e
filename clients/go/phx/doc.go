// Package phx is a Phoenix Channels client (protocol v2, JSON and binary
// frames) for Fabric and any Phoenix server, with Fabric's resume
// contract built in.
//
//	sock, err := phx.Dial(ctx, "wss://example.com/socket", phx.Options{
//		Params: url.Values{"token": {token}},
//	})
//	ch, err := sock.Join(ctx, "room:lobby", nil,
//		phx.On("new_msg", func(m phx.Message) { fmt.Println(string(m.Payload), m.Offset) }),
//		phx.OnResume(func(r phx.Resume) {
//			if !r.Recovered {
//				reload(r.Reason) // history_gone, history_cleared, epoch_changed, offset_ahead
//			}
//		}))
//	reply, err := ch.Push(ctx, "new_msg", map[string]string{"body": "hi"})
//
// A Socket reconnects by itself (jittered exponential backoff) and its
// channels rejoin. In a persistent namespace a channel tracks the epoch
// and the offset of the last message it received (from the join reply,
// each message's ref slot and the fabric:offset frame that follows a
// binary message) and rejoins with them, so the gateway replays exactly
// what was missed; if it cannot, OnResume says so with the reason.
//
// One goroutine reads each connection and runs the handlers in order;
// one more runs heartbeats, reconnects and rejoins. There is no goroutine
// per channel.
package phx

// Package longpoll is the Phoenix LongPoll transport (phoenix.js 1.8.16's
// `LongPoll` class, and its automatic fallback from WebSocket), served on
// <base>/longpoll next to <base>/websocket. It implements transport.Conn for
// a session, so the Phoenix session above it is the same one WebSocket uses.
// It imports only the standard library and the transport package.
//
// # Wire protocol (phoenix.js 1.8 longpoll.js; docs/channels.md)
//
// Every request carries the user's params, vsn=2.0.0 and, once a session
// exists, token=<session token>. The session token is the LAST `token` query
// value, and only when it verifies as a token this server signed: the user's
// own `token` param comes first in the query and is left for accept. Empty
// query components (`&&`, the trailing `&` of the first GET) are ignored.
//
// Session tokens are "lp1.<id>.<mac>": id is 128 random bits, mac the first
// 128 bits of HMAC-SHA256(Config.Secret, "lp1."+id), both base64url. A token
// that fails verification (tampered, another key, or the user's param) is
// simply "no session": the request takes the new-session path.
//
// Statuses. The client reads only the JSON `status`; the HTTP status is for
// proxies and logs. GET bodies only ever carry 200, 204, 403, 410 or 500 (any
// other value silently stalls phoenix.js).
//
//	request                                         HTTP  body
//	GET, no valid session token, accept ok          200   {"status":410,"token":S,"messages":[]}  (session open)
//	GET, no valid session token, accept error       200   {"status":403}  + Connection: close      (client: close 1008, backoff)
//	GET, no valid token, over MaxSessions/shutdown  503   {"status":500}  + Retry-After: 1         (client: close 1011, backoff)
//	GET, known session, frames buffered/arriving    200   {"status":200,"token":S,"messages":["<v2 frame>",…]}
//	GET, known session, window elapsed              200   {"status":204,"token":S,"messages":[]}
//	GET, replaced by a newer GET of the session     200   {"status":204,"token":S,"messages":[]}
//	GET, our token but the session is over          200   {"status":410,"token":"","messages":[]} (client: close 3410, reconnect, rejoin all)
//	POST, dispatched                                200   {"status":200}
//	POST, unknown/ended session or bad token        200   {"status":410}
//	POST, body > MaxPostBytes or > MaxLines lines   413   {"status":413}  (session ends, 1009)
//	POST, a line neither '['-JSON nor base64        400   {"status":400}  (nothing dispatched, session kept)
//	any, Origin refused by Config.AllowOrigin       403   {"status":403}
//	GET/POST of a session, refused by Recheck       403   {"status":403}  (session kept: credentials of another user)
//	OPTIONS (allowed origin)                        200   CORS preflight, empty body
//	other methods                                   405
//
// Why "session gone" answers 410 with an empty token and creates nothing:
// phoenix.js, when it already holds a token and reads status 410, returns
// before looking at `token`, closes the transport with 3410 and reconnects
// with a NEW LongPoll object (token null), whose first GET opens a fresh,
// authenticated session; every channel then rejoins with its offset. Creating
// a session for the 410 (as Phoenix does) would only leave an orphan. A
// client still holding no token never sends our token, so it cannot get here.
// Every non-200 POST answer makes the client close with 1011 and reconnect,
// which is also the intended effect of 410/413/400.
//
// POST bodies are application/x-ndjson: lines split on "\n" (a trailing
// "\r" dropped, empty lines skipped); a line starting with '[' is a v2 text
// frame, any other the standard padded base64 of a v2 binary frame. All lines
// are decoded before any is dispatched, then Session.HandleMessage runs for
// each in order. Another content type is one message (as Phoenix).
//
// Server→client: Conn.Send buffers the Message's Data (by reference) and
// wakes the held GET; a GET answers as soon as frames exist, each as a JSON
// string. Binary messages are never emitted on LongPoll (the client
// JSON.parses every poll message); Send drops and counts them
// (Stats.DroppedBinary). The gateway must therefore build LongPoll sessions
// in JSON-only mode (no kind 0/1/2 frames: JSON replies/pushes, or an error
// reply for a binary reply); this package cannot tell the session.
//
// # Sessions, lifetimes and close codes
//
//   - Only one GET is held per session: a second one answers the first with
//     204 and takes its place.
//   - MaxBuffered: a Send that would buffer more ends the session with 4008
//     (slow consumer); the buffer is dropped and the next GET gets 410. The
//     client rejoins and resumes by offset.
//   - Config.Budget: buffered bytes of live sessions count against the
//     process's transport.OutputBudget, shared with the WebSocket server;
//     over it, the session (of either transport) holding the most is ended
//     the same way.
//   - Conn.Close(code): the held GET answers what is buffered (or 410); if no
//     GET is held, buffered frames wait for the next GET (status 200), and any
//     GET after that gets 410. The close code itself cannot reach the client:
//     it always sees 3410 (session gone) and reconnects.
//   - A session with no GET held for IdleTimeout ends with 4000. A held GET
//     is never idle; the clock restarts when it answers.
//   - The session also implements transport.Expirer: ExpireAt(t, code,
//     reason) closes it at t (one runtime timer, replaced by a later call).
//   - Shutdown ends every session with 1001; buffers are dropped.
//   - HandleClose is called exactly once per session, never concurrently
//     with HandleMessage and never before it: POST bodies are serialized per
//     session; when the session ends during a POST, the POST stops
//     dispatching and delivers HandleClose itself after its last
//     HandleMessage. Otherwise HandleClose runs on a goroutine of its own,
//     because end can be triggered from inside the hub (Send overflow) or the
//     Phoenix session (Close), which must not be re-entered.
//   - Frames handed to a GET whose response is then lost (client gone
//     mid-write) are lost, as in Phoenix; replay by offset on rejoin covers
//     it. A GET cancelled before it took anything leaves the frames buffered.
//
// Idle timers: one time.AfterFunc per session, re-armed when a GET ends and
// otherwise left alone (a fired timer that finds a GET held, or a newer
// deadline, does nothing or re-arms). A runtime timer costs about a hundred
// bytes and no goroutine until it fires, expiry is exact, and LongPoll
// sessions are few next to WebSockets, so a per-session timer is cheaper and
// simpler than a sweeping goroutine over a map. No goroutine exists per
// session beyond net/http's for a request in progress.
//
// Locks: lpSession.mu before Server.mu (a new session is listed under its
// own lock); neither is held while calling into the Session.
//
// # Wiring (for the gateway)
//
//	lp := longpoll.New(longpoll.Config{Secret: sharedSecret, AllowOrigin: originOK, Logger: log})
//	mux.HandleFunc("/socket/longpoll", func(w http.ResponseWriter, r *http.Request) {
//		lp.Serve(w, r, func(r *http.Request) (func(transport.Conn) transport.Session, error) {
//			// check vsn, the user's params / X-Phoenix-AuthToken, origin
//			return func(c transport.Conn) transport.Session { return session.New(..., c, v, policy /* JSON-only */) }, nil
//		})
//	})
//	// on drain: lp.Shutdown(ctx) alongside the WebSocket transport's.
package longpoll

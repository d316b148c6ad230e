package ws

import "github.com/fabric-rt/fabric/gateway/transport"

// Each calls fn with the session of every open connection (a snapshot:
// connections opened meanwhile may be missed, closed ones may be seen).
// It is for rare, fleet-wide operations (disconnect a user, close the
// connections of revoked tokens): O(connections), no index kept for it, so
// a connection costs nothing more.
func (s *Server) Each(fn func(transport.Session)) {
	for _, l := range s.loops {
		for _, c := range l.snapshot() {
			fn(c.sess) // set before the conn was listed (Upgrade, under l.mu)
		}
	}
}

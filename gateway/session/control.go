package session

import (
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// Cluster-wide control (disconnect a user, unsubscribe it from a topic,
// close revoked tokens' connections) reaches a session through these.

// Policy is the connection's authorization (nil when anonymous): the
// gateway keeps its token's identity there.
func (s *Session) Policy() Policy { return s.policy }

// Close closes the connection with code and reason (LongPoll: the session
// ends).
func (s *Session) Close(code transport.CloseCode, reason string) { s.conn.Close(code, reason) }

// Unsubscribe ends the connection's instance of topic as the server
// closing the channel: the client gets phx_close (phoenix.js then does
// not rejoin it) and the membership, presence included, goes. It reports
// whether the connection had joined topic.
func (s *Session) Unsubscribe(topic string) bool {
	s.mu.Lock()
	ch := s.channel(topic)
	if ch == nil || s.closed {
		s.mu.Unlock()
		return false
	}
	s.forget(ch)
	ch.setGone()
	s.mu.Unlock()
	s.cfg.Hub.Leave(ch.topic, ch)
	s.untrack(ch)
	if ch.live {
		s.emit("leave", ch.topic)
	}
	jr := ch.joinRef()
	s.send(phoenix.AppendMessage(nil, s.v, jr, jr, ch.topic, phoenix.EventClose, nil))
	return true
}

// KeySession returns the session a hub member key (a channel instance)
// belongs to, or nil for a key of another kind.
func KeySession(key any) *Session {
	if ch, ok := key.(*channel); ok {
		return ch.s
	}
	return nil
}

package session

import (
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/presence"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// A joined instance gives the presence tracker its connection and join_ref
// when a flush needs them, so a member's record keeps the instance rather
// than copies of both (presence.Instance). Both are set when the instance
// is made and never change, so reading them needs no lock.

var _ presence.Instance = (*channel)(nil)

// PresenceConn is the instance's connection.
func (ch *channel) PresenceConn() transport.Conn { return ch.s.conn }

// PresenceJoinRef is the instance's join_ref.
func (ch *channel) PresenceJoinRef() phoenix.Ref { return ch.joinRef }

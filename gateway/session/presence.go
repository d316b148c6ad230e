package session

import (
	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/presence"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// A joined instance gives the presence tracker its connection, join_ref
// and connection number when a flush needs them, so a member's record
// keeps the instance rather than copies (presence.Instance). All are set
// before the instance joins and never change, so reading them needs no
// lock.

var _ presence.Instance = (*channel)(nil)

// PresenceConn is the instance's connection.
func (ch *channel) PresenceConn() transport.Conn { return ch.s.conn }

// PresenceJoinRef is the instance's join_ref.
func (ch *channel) PresenceJoinRef() phoenix.Ref { return ch.joinRef() }

// PresenceConnID is the connection's id (Session.ID) as its shared prefix
// and number.
func (ch *channel) PresenceConnID() (string, uint64) { return ch.s.cfg.IDPrefix, ch.s.idn }

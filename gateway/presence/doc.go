// Package presence implements Phoenix Presence at the gateway, cluster-wide:
// presence_state to every member after each (re)join and batched
// presence_diff broadcasts, in exactly the shapes phoenix.js's Presence
// class consumes (presence_state is the whole list, presence_diff has
// joins and leaves, both keyed by presence key with a metas list), for
// namespaces configured with presence: true.
//
// # Keys and metas
//
// The key is the connection's authenticated user (JWT sub); anonymous
// connections use the join param presence_key or user, else the
// connection id. A meta is the app's meta from the join param named by the
// namespace's presence_meta_key (default "meta"; an object's fields are
// merged, any other value is kept under that name; over 1 KiB as sent it
// is dropped) plus phx_ref (unique: gateway id + counter) and online_at (unix
// ms). One key may have several metas (one per tab / channel instance).
// A local member is stored as a small record, not as JSON: its app meta
// is a handle on one shared encoding per distinct value, its phx_ref a
// counter; metas are written out when a message is encoded (metas.go,
// docs/presence.md "How members are stored").
//
// # Within a gateway
//
// Track runs from the hub's Joined callback, right after the join reply,
// under the hub's channel lock: it only records the member under the
// Tracker's own lock (O(1), no network, never a call into the hub). One
// loop then flushes every Flush (50 ms), per dirty channel: presence_state
// (with the member's join_ref) to members tracked since — one encoding of
// the state per flush of the channel, shared by reference: only the head
// carrying the join_ref is per member (transport.Message.Tail) — and one
// presence_diff with every change, local or remote, to the members that
// already have their state, encoded once per protocol version. The loop
// writes straight to each member's transport.Conn (safe from anywhere), so
// a member's state always precedes its diffs and no diff already folded
// into its state is re-sent. The Tracker does this fan-out itself rather
// than through the hub's member list because a resuming member is tracked
// (and must see diffs) while the hub is still replaying its history,
// before the hub lists it.
//
// Over the member cap or the state byte cap (Config.MaxMembers), members
// get an empty presence_state and fabric:presence_count instead of the
// list and its diffs, so what a join or leave storm costs stops growing
// with the room. Metas are measured as sent (re-encoded without HTML
// escaping), and AdmitJoin limits re-joins of a topic per connection.
// docs/presence.md gives each budget, its default and what it bounds.
//
// # Between gateways (one core NATS subject per channel)
//
// <prefix>_presence.<ns>.<segments>, e.g. fabric_presence.room.lobby, carries
// JSON messages {"t", "gw", ...}; member sets use the Phoenix shape:
//
//   - diff  {seq, ttl, joins, leaves}: this gateway's local changes of the
//     last Flush (one message per channel per batch, never per member).
//   - hb    {seq, ttl}: every TTL/3 per channel with local members. It does
//     not repeat the member list (a big channel would send megabytes per
//     heartbeat); it carries the latest diff seq, so a receiver that
//     missed a diff notices and asks for the state.
//   - sync  {to?}: a request (reply inbox) on the same subject (the NATS
//     broker receives all of a namespace's on one subscription, and
//     answers locally when it heard no other gateway: nats/natsbroker).
//     Sent when a gateway starts serving a channel (to: all; answers are
//     collected for SyncWindow, 200 ms, and only then do the first
//     members get presence_state, which therefore includes everyone), and
//     to one gateway whose diffs show a gap (seq jump), that is new to us,
//     or whose heartbeat is ahead of what we applied (at most once a second).
//   - state {seq, ttl, state}: the answer, this gateway's local members as
//     of seq. Answers travel apart from the subject, so a state older than
//     diffs already applied from an unsynced gateway is completed with the
//     diffs logged since.
//   - bye: the gateway stops serving the channel (last member left and the
//     grace passed, or shutdown): others drop its members at once.
//
// Each receiver keeps, per remote gateway, its member set, the latest seq
// and the last time it heard from it; a gateway silent for longer than its
// ttl (taken from its own messages, default 15 s) is expired: its members
// leave for every local client. A killed gateway's members therefore
// disappear within TTL + 250 ms everywhere.
//
// Cost: per (channel, gateway) one diff per Flush while members change, one
// heartbeat per TTL/3, one subscription; a state transfer only when a
// gateway starts serving a channel or lost a message. The gateway id is
// random per process, so a restarted gateway is a new member set and the
// old one expires (or said bye).
//
// Why not JetStream KV: every change and heartbeat would
// be a replicated write, and presence is soft state that heartbeats and
// resyncs repair anyway.
package presence

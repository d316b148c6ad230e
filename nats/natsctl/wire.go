package natsctl

import (
	"encoding/json"

	"github.com/fabric-rt/fabric/gateway/control"
)

// Operations: the last token of <prefix>_ctl.req.<op>.
const (
	opPresence      = "presence"
	opPresenceStats = "presence_stats"
	opChannels      = "channels"
	opDisconnect    = "disconnect"
	opUnsubscribe   = "unsubscribe"
	opRevoke        = "revoke"
	opInfo          = "info"
)

// subjects are the control subjects under one prefix.
type subjects struct {
	heartbeat string // <prefix>_ctl.hb: every responder, every interval
	bye       string // <prefix>_ctl.bye: a responder stopping
	hello     string // <prefix>_ctl.hello: "heartbeat now" (a new Cluster)
	request   string // <prefix>_ctl.req. followed by the operation
}

func newSubjects(prefix string) subjects {
	base := prefix + "_ctl."
	return subjects{heartbeat: base + "hb", bye: base + "bye", hello: base + "hello", request: base + "req."}
}

// heartbeat is what a responder publishes on <prefix>_ctl.hb.
type heartbeat struct {
	GW      string `json:"gw"`
	Version string `json:"version,omitempty"`
	Started int64  `json:"started_ms"` // unix ms
	EveryMS int64  `json:"every_ms"`   // the sender's interval: alive for 3 of them
}

// request is the body of every <prefix>_ctl.req.<op>; each operation uses
// its own fields.
type request struct {
	Topic   string `json:"topic,omitempty"`
	Pattern string `json:"pattern,omitempty"`
	User    string `json:"user,omitempty"`
	Code    int    `json:"code,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// BanUntil (unix ms) bans User until then (disconnect).
	BanUntil int64 `json:"ban_until_ms,omitempty"`
	// Revocation is the entry just written to the bucket (revoke): each
	// gateway applies it at once rather than waiting for its watch.
	Revocation *entry `json:"revocation,omitempty"`
}

// answer is one gateway's reply; each operation fills its own fields.
type answer struct {
	GW    string `json:"gw"`
	Error string `json:"error,omitempty"`
	// presence: metas by presence key, this gateway's members only.
	Presence map[string][]json.RawMessage `json:"presence,omitempty"`
	// presence_stats: channel instances by presence key (no metas: cheap).
	Keys map[string]int `json:"keys,omitempty"`
	// channels: local topics and their local members.
	Channels []channelCount `json:"channels,omitempty"`
	// disconnect, unsubscribe, revoke: connections or instances closed.
	Count int `json:"count,omitempty"`
	// info
	Info *gatewayInfo `json:"info,omitempty"`
}

type channelCount struct {
	Topic   string `json:"topic"`
	Members int    `json:"members"`
}

type gatewayInfo struct {
	Version     string   `json:"version,omitempty"`
	UptimeMS    int64    `json:"uptime_ms"`
	Connections int      `json:"connections"`
	Channels    int      `json:"channels"`
	NATS        natsInfo `json:"nats"`
}

type natsInfo struct {
	ClusterName     string   `json:"cluster,omitempty"`
	Servers         []string `json:"servers,omitempty"`
	JetStream       bool     `json:"jetstream"`
	JetStreamDomain string   `json:"domain,omitempty"`
}

func (n natsInfo) control() control.NATSInfo {
	return control.NATSInfo{ClusterName: n.ClusterName, Servers: n.Servers, JetStream: n.JetStream, JetStreamDomain: n.JetStreamDomain}
}

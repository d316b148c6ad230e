package serverapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// AuditEvent is what every admin RPC (Disconnect, Unsubscribe, Revoke,
// ClearChannel, RemoveMessage) records, whether it succeeded or not: who
// (the credential's name, never the secret), what (the RPC and its
// arguments), when, from where, and the outcome.
type AuditEvent struct {
	Time     time.Time      `json:"time"`
	Who      string         `json:"who"`
	RPC      string         `json:"rpc"`
	Args     map[string]any `json:"args"`
	Remote   string         `json:"remote,omitempty"`
	OK       bool           `json:"ok"`
	Error    string         `json:"error,omitempty"`
	Affected int            `json:"affected"`
}

// Auditor publishes AuditEvents as JSON on <prefix>_audit.<rpc> (core
// NATS: whoever keeps an audit trail subscribes, or captures the subjects
// in a stream) and writes each to the log.
type Auditor struct {
	nc     *nats.Conn
	prefix string
	log    *slog.Logger
	now    func() time.Time
}

// NewAuditor returns an Auditor on nc (nil: the log only); prefix is the
// subject prefix ("fabric" → fabric_audit.Disconnect).
func NewAuditor(nc *nats.Conn, prefix string, log *slog.Logger) *Auditor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Auditor{nc: nc, prefix: prefix, log: log, now: time.Now}
}

// AuditSubject is the subject events of rpc go to.
func AuditSubject(prefix, rpc string) string { return prefix + "_audit." + rpc }

// Record writes one event. A failure to publish it is logged, not returned:
// the operation already happened.
func (a *Auditor) Record(_ context.Context, p *Principal, remote, rpc string, args map[string]any, affected int, err error) {
	now := time.Now
	if a.now != nil {
		now = a.now
	}
	ev := AuditEvent{Time: now().UTC(), Who: p.Name, RPC: rpc, Args: args, Remote: remote, OK: err == nil, Affected: affected}
	if err != nil {
		ev.Error = err.Error()
	}
	a.log.Info("audit", "who", ev.Who, "rpc", rpc, "args", args, "remote", remote, "ok", ev.OK, "error", ev.Error, "affected", affected)
	if a.nc == nil {
		return
	}
	b, _ := json.Marshal(ev) // plain values only
	if perr := a.nc.Publish(AuditSubject(a.prefix, rpc), b); perr != nil {
		a.log.Warn("audit event not published to NATS", "rpc", rpc, "err", perr)
	}
}

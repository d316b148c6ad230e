package gateway

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/broker"
	"github.com/fabric-rt/fabric/gateway/hooks"
)

// HooksConfig turns on the services' say in connections and joins
// (docs/hooks.md).
type HooksConfig struct {
	// Connect asks fabric_connect before accepting each connection.
	Connect bool
	// Joins is true when some namespace has a join hook: connections
	// then keep their token's claims for the join requests.
	Joins bool
	// Concurrency bounds the hook requests in flight (default 256).
	Concurrency int
	// ConnectTimeout bounds the connect hook (default 5 s).
	ConnectTimeout time.Duration
}

// hookConn is what the connect hook gave a connection.
type hookConn struct {
	claims, assigns []byte
}

// newHooks sets up the hooks when the broker can ask services and some
// hook is on.
func (g *Gateway) newHooks() {
	hc := g.cfg.Hooks
	hb, ok := g.cfg.Broker.(broker.Hooks)
	if !ok || (!hc.Connect && !hc.Joins) {
		return
	}
	g.hooks = hooks.New(hooks.Config{Broker: hb, Namespaces: g.cfg.Namespaces, Concurrency: hc.Concurrency, ConnectTimeout: hc.ConnectTimeout})
	g.sess.Hooks = g.hooks
}

// HookStats is a snapshot of the hooks' counters (zero when off).
func (g *Gateway) HookStats() (hooks.Stats, bool) {
	if g.hooks == nil {
		return hooks.Stats{}, false
	}
	return g.hooks.Stats(), true
}

// connectHook runs the connect hook of an admitted connection: a refusal is
// a 403 with the service's reason, before the upgrade. Its ok answer's
// extra grants join the connection's policy. Without hooks it returns nil.
func (g *Gateway) connectHook(r *http.Request, pol *policy, longPoll bool) (*hookConn, *refusal) {
	if g.hooks == nil {
		return nil, nil
	}
	hc := &hookConn{claims: g.rawClaims(r)}
	if !g.cfg.Hooks.Connect {
		return hc, nil
	}
	m := broker.ConnectMeta{Claims: hc.claims, Params: connectParams(r), Transport: "websocket"}
	if longPoll {
		m.Transport = "longpoll"
	}
	if pol != nil {
		m.Subject = pol.sub
	}
	a, why := g.hooks.Connect(m)
	if why != "" {
		g.logAuth.log(g.cfg.Logger, "connection refused by the connect hook", "remote", r.RemoteAddr, "reason", why)
		return nil, &refusal{status: http.StatusForbidden, reason: why}
	}
	hc.assigns = a.Assigns
	if pol != nil && (len(a.Channels) > 0 || len(a.Publish) > 0) {
		join, err1 := auth.ParsePatterns(a.Channels)
		pub, err2 := auth.ParsePatterns(a.Publish)
		if err1 != nil || err2 != nil {
			// Fail closed: grants the gateway cannot read grant nothing,
			// and the service is told by the refusal in its logs.
			return nil, &refusal{status: http.StatusForbidden, reason: hooks.ReasonInvalidReply}
		}
		pol.grants = pol.grants.Merge(auth.Grants{Join: join, Publish: pub}.For(pol.sub))
	}
	return hc, nil
}

// rawClaims is the verified token's payload (every claim), for the hooks;
// nil when anonymous.
func (g *Gateway) rawClaims(r *http.Request) []byte {
	if g.cfg.Auth.Verifier == nil {
		return nil
	}
	tok, err := auth.FromRequest(r, g.cfg.Auth.AllowQueryToken)
	if err != nil {
		return nil
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || !json.Valid(b) {
		return nil
	}
	return b
}

// connectParams are phoenix.js's connect params from the query string, as
// a JSON object of strings; the token (a credential: its claims travel
// instead) and the protocol version are left out.
func connectParams(r *http.Request) []byte {
	q := r.URL.Query()
	m := make(map[string]string, len(q))
	for k, v := range q {
		if k == "token" || k == "vsn" || len(v) == 0 {
			continue
		}
		m[k] = v[0]
	}
	b, _ := json.Marshal(m)
	return b
}

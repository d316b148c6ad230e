package app

import (
	"time"

	"github.com/fabric-rt/fabric/gateway"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// The namespace policy's way through the process: the config file's
// namespaces section (cmd/fabric) becomes Config.Namespaces, validated into
// a namespace.Set the gateway consults; the NATS adapter gets only the
// stream settings of the namespaces that keep history.

// namespaces is cfg's namespace policy: its namespaces, or the defaults
// when it has none.
func namespaces(cfg Config) (*namespace.Set, error) {
	nss := cfg.Namespaces
	if nss == nil {
		nss = namespace.Defaults()
	}
	return namespace.New(nss)
}

// streams is what natsbroker runs for the persistent namespaces of nss.
func streams(nss *namespace.Set) map[string]natsbroker.Stream {
	out := map[string]natsbroker.Stream{}
	for _, name := range nss.Names() {
		ns, _ := nss.Get(name)
		if !ns.History {
			continue
		}
		out[name] = natsbroker.Stream{MaxAge: ns.MaxAge, MaxBytes: ns.MaxBytes, MaxMsgsPerChannel: ns.MaxMsgsPerChannel,
			Replicas: ns.Replicas, AllowPurge: ns.AllowPurge, AllowDelete: ns.AllowDelete, Live: ns.LiveSubscription}
	}
	return out
}

// presenceTTLs is each presence namespace's presence_ttl (defaults
// applied), which natsbroker's presence bus needs to tell how long another
// gateway it heard stays assumed.
func presenceTTLs(nss *namespace.Set) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, name := range nss.Names() {
		if p, ok := nss.Presence(name + ":"); ok {
			out[name] = p.TTL
		}
	}
	return out
}

// compressions builds the gateway's compression classes: one per
// configured namespace (off when its config says compression: false).
func (a *App) compressions(nss *namespace.Set) *gateway.Compressions {
	a.compress = gateway.NewCompressions(nss.Compressed())
	return a.compress
}

package app

import (
	"github.com/fabric-rt/fabric/gateway"
	"github.com/fabric-rt/fabric/nats/natsbroker"
)

// compressions builds the gateway's compression classes: one per
// configured namespace (off when its config says compression: false).
func (a *App) compressions(nss map[string]natsbroker.Namespace) *gateway.Compressions {
	on := make(map[string]bool, len(nss))
	for name, ns := range nss {
		on[name] = ns.Compression == nil || *ns.Compression
	}
	a.compress = gateway.NewCompressions(on)
	return a.compress
}

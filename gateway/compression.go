package gateway

import (
	"sort"
	"strings"

	"github.com/fabric-rt/fabric/gateway/transport"
)

// OtherNamespaces names the compression class of every namespace that has
// no entry in the namespaces config (and of replies to one connection).
const OtherNamespaces = "*"

// Compressions holds one compression class per configured namespace and
// one for everything else: a fixed set, so the metrics labelled by it
// stay bounded whatever topics clients join.
type Compressions struct {
	named map[string]*transport.Compression
	other *transport.Compression
}

// NewCompressions builds the classes; on[ns] false turns compression off
// for namespace ns (its messages always go plain).
func NewCompressions(on map[string]bool) *Compressions {
	c := &Compressions{named: make(map[string]*transport.Compression, len(on)), other: &transport.Compression{Name: OtherNamespaces}}
	for ns, ok := range on {
		c.named[ns] = &transport.Compression{Name: ns, Off: !ok}
	}
	return c
}

// For is topic's class (its namespace is the part before the first ':').
func (c *Compressions) For(topic string) *transport.Compression {
	ns, _, _ := strings.Cut(topic, ":")
	if k := c.named[ns]; k != nil {
		return k
	}
	return c.other
}

// All lists every class, sorted by name.
func (c *Compressions) All() []*transport.Compression {
	out := make([]*transport.Compression, 0, len(c.named)+1)
	for _, k := range c.named {
		out = append(out, k)
	}
	out = append(out, c.other)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

package app

import (
	"errors"
	"fmt"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/nats/natsembed"
)

// Regions (docs/regions.md): the embedded server as a leaf node of a hub
// in another region, and where persistent namespaces keep their history.

// LeafConfig connects the embedded NATS server to a hub as a leaf node.
type LeafConfig struct {
	// Remotes are the hub's leaf-node URLs (nats-leaf://host:port); empty:
	// no leaf node.
	Remotes []string
	// One of Creds (credentials file), Nkey (NKey seed file) or
	// User/Password: the hub user the leaf logs in as.
	Creds, Nkey    string
	User, Password string
	TLSCA          string // PEM CA file verifying the hub (implies TLS)
}

func (l LeafConfig) set() bool {
	return len(l.Remotes) > 0 || l.Creds != "" || l.Nkey != "" || l.User != "" || l.Password != "" || l.TLSCA != ""
}

// checkRegions refuses leaf settings that cannot work, before anything
// starts.
func checkRegions(cfg Config) error {
	if cfg.JetStreamDomain != "" && cfg.NATSURL != "" {
		return errors.New("--jetstream-domain names the embedded NATS server's domain, and --nats-url means there is none")
	}
	if !cfg.Leaf.set() {
		return nil
	}
	if cfg.NATSURL != "" {
		return errors.New("--leafnode-remote connects the embedded NATS server, and --nats-url means there is none: " +
			"make the external servers leaf nodes in their own configuration instead")
	}
	if len(cfg.Leaf.Remotes) == 0 {
		return errors.New("--leafnode-creds, --leafnode-nkey, --leafnode-user, --leafnode-password and --leafnode-tls-ca need --leafnode-remote")
	}
	if cfg.HistoryDomain != "" {
		return nil
	}
	nss := cfg.Namespaces
	if nss == nil {
		nss = namespace.Defaults()
	}
	for name, ns := range nss {
		if ns.History {
			// Without a home, this leaf would create its own stream over
			// the same subjects as the hub's: both would store every
			// message published on either side, each with its own
			// offsets, and a JetStream publish would get two acks.
			return fmt.Errorf("namespace %q keeps history and --leafnode-remote joins another region: "+
				"give --history-domain, the JetStream domain its stream lives in (the hub's, or this leaf's own --jetstream-domain to home it here; docs/regions.md)", name)
		}
	}
	return nil
}

// leafEmbedConfig adds the leaf node and the JetStream domain to the
// embedded server's configuration.
func leafEmbedConfig(cfg Config, ecfg *natsembed.Config) {
	ecfg.JetStreamDomain = cfg.JetStreamDomain
	if len(cfg.Leaf.Remotes) == 0 {
		return
	}
	ecfg.LeafRemotes = []natsembed.LeafRemote{{URLs: cfg.Leaf.Remotes, Credentials: cfg.Leaf.Creds,
		NkeySeedFile: cfg.Leaf.Nkey, User: cfg.Leaf.User, Password: cfg.Leaf.Password, TLSCA: cfg.Leaf.TLSCA}}
}

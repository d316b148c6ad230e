package natsembed

import (
	"crypto/tls"
	"net"
	"strconv"

	"github.com/nats-io/nats-server/v2/server"
)

// Kinds of network listener the embedded server can open.
const (
	KindClient    = "client"     // Config.Host/Port
	KindCluster   = "cluster"    // routes: Config.ClusterListen
	KindLeafNode  = "leafnodes"  // leafnodes {} in ConfigFile
	KindGateway   = "gateway"    // gateway {} (superclusters) in ConfigFile
	KindWebsocket = "websocket"  // websocket {} in ConfigFile
	KindMQTT      = "mqtt"       // mqtt {} in ConfigFile
	KindMonitor   = "monitoring" // http/https monitoring port in ConfigFile
)

// Listener is one network port the server would open.
type Listener struct {
	Kind string
	Addr string // host:port as configured; an empty host means every interface
	// Authenticated reports that a connection must prove who it is
	// (credentials, or a TLS client certificate verified against the
	// configured CAs) before it can publish or subscribe. The monitoring
	// port never is: it has no authentication at all.
	Authenticated bool
}

// Loopback reports whether the listener is bound to a loopback address
// only (127.0.0.0/8, ::1, localhost); an empty host is every interface.
func (l Listener) Loopback() bool {
	host, _, err := net.SplitHostPort(l.Addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// Listeners lists the network listeners Start would open with cfg, with
// ConfigFile read, so that a caller can refuse a configuration before
// anything listens. It fails exactly when Start would fail to build its
// options.
func Listeners(cfg Config) ([]Listener, error) {
	o, err := cfg.options()
	if err != nil {
		return nil, err
	}
	hp := func(host string, port int) string {
		return net.JoinHostPort(host, strconv.Itoa(port))
	}
	client := clientAuth(o)
	var out []Listener
	if !o.DontListen {
		out = append(out, Listener{KindClient, hp(o.Host, o.Port), client})
	}
	if o.Cluster.Port != 0 {
		out = append(out, Listener{KindCluster, hp(o.Cluster.Host, o.Cluster.Port),
			o.Cluster.Username != "" || o.Cluster.TLSMap || verifiesClients(o.Cluster.TLSConfig)})
	}
	if l := o.LeafNode; l.Port != 0 {
		// Without its own authorization a leaf node port checks the
		// client users.
		own := l.Username != "" || l.Nkey != "" || len(l.Users) > 0 || l.TLSMap || verifiesClients(l.TLSConfig)
		out = append(out, Listener{KindLeafNode, hp(l.Host, l.Port), own || client})
	}
	if g := o.Gateway; g.Port != 0 {
		out = append(out, Listener{KindGateway, hp(g.Host, g.Port),
			g.Username != "" || g.TLSMap || verifiesClients(g.TLSConfig)})
	}
	if w := o.Websocket; w.Port != 0 {
		own := w.Username != "" || w.Token != ""
		out = append(out, Listener{KindWebsocket, hp(w.Host, w.Port), w.NoAuthUser == "" && (own || client)})
	}
	if m := o.MQTT; m.Port != 0 {
		own := m.Username != "" || m.Token != ""
		out = append(out, Listener{KindMQTT, hp(m.Host, m.Port), m.NoAuthUser == "" && (own || client)})
	}
	for _, port := range []int{o.HTTPPort, o.HTTPSPort} {
		if port != 0 {
			host := o.HTTPHost
			if host == "" {
				host = o.Host // nats-server's default for the monitoring host
			}
			out = append(out, Listener{KindMonitor, hp(host, port), false})
		}
	}
	return out, nil
}

// AuthRequired reports whether a client connection (in-process ones
// included) must authenticate with cfg and its ConfigFile.
func AuthRequired(cfg Config) (bool, error) {
	o, err := cfg.options()
	if err != nil {
		return false, err
	}
	return clientAuth(o), nil
}

// clientAuth reports whether client connections must authenticate: some
// user, nkey, token, operator or auth callout is configured, and no
// no_auth_user lets a connection without credentials in as someone.
func clientAuth(o *server.Options) bool {
	if o.NoAuthUser != "" {
		return false
	}
	return len(o.Users) > 0 || len(o.Nkeys) > 0 || o.Username != "" || o.Authorization != "" ||
		len(o.TrustedOperators) > 0 || len(o.TrustedKeys) > 0 || o.AuthCallout != nil ||
		(o.TLSVerify && o.TLSMap)
}

func verifiesClients(c *tls.Config) bool {
	return c != nil && c.ClientAuth == tls.RequireAndVerifyClientCert
}

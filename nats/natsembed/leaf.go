package natsembed

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// LeafRemote is one hub this server connects to as a leaf node
// (nats-server leafnodes { remotes [...] }): the server joins the hub's
// account the credentials bind it to, and subjects flow both ways by
// interest, one copy per message whatever the number of subscribers on
// either side. At most one of Credentials, NkeySeedFile and User is given.
type LeafRemote struct {
	// URLs of the hub's leaf-node listeners: nats-leaf://host:port (a bare
	// host:port gets that scheme), tls:// for TLS, ws:// or wss://.
	// Several URLs are the same hub (tried in turn).
	URLs []string
	// Credentials is a credentials file (user JWT and NKey seed, from nsc).
	Credentials string
	// NkeySeedFile holds the NKey user seed (SU…) the hub knows the
	// public key of.
	NkeySeedFile string
	// User and Password log in as a hub user (also possible as
	// user:password@ in a URL, which User then must not repeat).
	User, Password string
	// TLSCA is a PEM file of CA certificates that verify the hub; it
	// implies TLS.
	TLSCA string
}

var domainName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// leafOptions adds Fabric's leaf-node settings to opts (built from the
// config file and cfg): the listener, the remotes and the JetStream domain.
func (cfg Config) leafOptions(opts *server.Options) error {
	if cfg.LeafNodeListen != "" {
		if opts.LeafNode.Port != 0 || opts.LeafNode.Host != "" {
			return fmt.Errorf("natsembed: leaf-node listener given twice: as %s and in %s (leafnodes { listen }); keep one", cfg.LeafNodeListen, cfg.ConfigFile)
		}
		h, port, err := splitListen(cfg.LeafNodeListen)
		if err != nil {
			return fmt.Errorf("natsembed: leaf-node listen %q: %w", cfg.LeafNodeListen, err)
		}
		opts.LeafNode.Host, opts.LeafNode.Port = h, port
	}
	for _, r := range cfg.LeafRemotes {
		ro, err := r.options()
		if err != nil {
			return err
		}
		opts.LeafNode.Remotes = append(opts.LeafNode.Remotes, ro)
	}
	domain := cfg.JetStreamDomain
	if domain != "" && opts.JetStreamDomain != "" {
		return fmt.Errorf("natsembed: JetStream domain given twice: %q and in %s (jetstream { domain }); keep one", domain, cfg.ConfigFile)
	}
	if domain == "" && opts.JetStreamDomain == "" && cfg.JetStream && len(opts.LeafNode.Remotes) > 0 {
		// A leaf with JetStream needs a domain of its own: the hub's
		// JetStream and this one are reached as $JS.<domain>.API across
		// the link. Every node of a cluster must share it.
		domain = DerivedDomain(cfg.ClusterName, opts.ServerName)
	}
	if domain != "" {
		if !domainName.MatchString(domain) {
			return fmt.Errorf("natsembed: bad JetStream domain %q: 1-64 characters of [A-Za-z0-9_-]", domain)
		}
		opts.JetStreamDomain = domain
	}
	return nil
}

// DerivedDomain is the JetStream domain a leaf server gets when none is
// configured: its cluster name (every node of a cluster must agree), else
// its server name, with characters a domain may not hold replaced by "_".
func DerivedDomain(clusterName, serverName string) string {
	d := clusterName
	if d == "" {
		d = serverName
	}
	d = strings.Map(func(r rune) rune {
		if r < 128 && (r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return r
		}
		return '_'
	}, d)
	if len(d) > 64 {
		d = d[:64]
	}
	return d
}

// JetStreamDomain is the domain the server runs with ("" for none), as
// derived when Config left it empty.
func (s *Server) JetStreamDomain() string {
	if c := s.ns.JetStreamConfig(); c != nil {
		return c.Domain
	}
	return ""
}

func splitListen(hostport string) (string, int, error) {
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, errors.New("bad port")
	}
	if port == 0 {
		port = -1 // nats-server: 0 means no listener
	}
	if h == "" {
		h = "0.0.0.0"
	}
	return h, port, nil
}

// options checks the remote (every file is read now, so a missing one
// stops the start with its name) and turns it into nats-server's form.
func (r LeafRemote) options() (*server.RemoteLeafOpts, error) {
	ro := &server.RemoteLeafOpts{}
	n := 0
	for _, set := range []bool{r.Credentials != "", r.NkeySeedFile != "", r.User != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return nil, errors.New("natsembed: leaf remote: give one of credentials file, nkey seed file, user")
	}
	if r.Password != "" && r.User == "" {
		return nil, errors.New("natsembed: leaf remote: a password needs a user")
	}
	for _, raw := range r.URLs {
		raw = strings.TrimSpace(raw)
		if raw == "" {
			continue
		}
		if !strings.Contains(raw, "://") {
			raw = "nats-leaf://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || u.Port() == "" {
			return nil, fmt.Errorf("natsembed: bad leaf remote %q: want nats-leaf://host:port", redactURL(raw))
		}
		switch u.Scheme {
		case "nats-leaf", "nats", "tls", "ws", "wss":
		default:
			return nil, fmt.Errorf("natsembed: bad leaf remote scheme %q: want nats-leaf, tls, ws or wss", u.Scheme)
		}
		if r.User != "" {
			if u.User != nil {
				return nil, fmt.Errorf("natsembed: leaf remote %s: user given twice (in the URL and as a user)", redactURL(raw))
			}
			u.User = url.UserPassword(r.User, r.Password)
		}
		if u.Scheme == "tls" {
			ro.TLS = true
		}
		ro.URLs = append(ro.URLs, u)
	}
	if len(ro.URLs) == 0 {
		return nil, errors.New("natsembed: leaf remote without a URL")
	}
	if r.Credentials != "" {
		if _, err := os.ReadFile(r.Credentials); err != nil {
			return nil, fmt.Errorf("natsembed: leaf remote credentials: %w", err)
		}
		ro.Credentials = r.Credentials
	}
	if r.NkeySeedFile != "" {
		b, err := os.ReadFile(r.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("natsembed: leaf remote nkey: %w", err)
		}
		kp, err := nkeys.ParseDecoratedNKey(b)
		if err != nil {
			return nil, fmt.Errorf("natsembed: leaf remote nkey %s: %w", r.NkeySeedFile, err)
		}
		seed, err := kp.Seed()
		kp.Wipe()
		if err != nil || len(seed) < 2 || seed[1] != 'U' {
			return nil, fmt.Errorf("natsembed: leaf remote nkey %s: not a user seed (SU…)", r.NkeySeedFile)
		}
		ro.Nkey = string(seed)
	}
	if r.TLSCA != "" {
		pem, err := os.ReadFile(r.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("natsembed: leaf remote TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("natsembed: leaf remote TLS CA %s: no PEM certificate", r.TLSCA)
		}
		ro.TLS, ro.TLSConfig = true, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return ro, nil
}

// redactURL hides a URL's password (error messages reach logs).
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

// LeafURL is the URL leaf nodes connect to ("nats-leaf://host:port"), ""
// without a leaf-node listener.
func (s *Server) LeafURL() string {
	v, err := s.ns.Varz(nil)
	if err != nil || v.LeafNode.Port == 0 {
		return ""
	}
	return "nats-leaf://" + net.JoinHostPort(v.LeafNode.Host, strconv.Itoa(v.LeafNode.Port))
}

package app

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/nats/natsembed"
)

// ErrOpenOnNetwork is returned when anonymous mode would be reachable from
// the network.
var ErrOpenOnNetwork = errors.New("refusing to start without authentication on a non-loopback address")

// plan is what Start's check phase derived from the config for the later
// phases.
type plan struct {
	verifier *auth.Verifier // nil: anonymous
	nss      *namespace.Set
}

// check is Start's first phase: every config error it can find before
// anything starts (no listener opened, no NATS dialed).
func check(cfg Config) (plan, error) {
	verifier, err := newVerifier(cfg)
	if err != nil {
		return plan{}, err
	}
	if verifier == nil {
		if err := checkAnonymous(cfg); err != nil {
			return plan{}, err
		}
	}
	if err := checkExposure(cfg); err != nil {
		return plan{}, err
	}
	if err := checkRegions(cfg); err != nil {
		return plan{}, err
	}
	nss, err := namespaces(cfg)
	if err != nil {
		return plan{}, err
	}
	return plan{verifier: verifier, nss: nss}, nil
}

// newVerifier builds the JWT verifier from the config; nil means anonymous.
func newVerifier(cfg Config) (*auth.Verifier, error) {
	ac := auth.Config{
		Secret:   []byte(cfg.JWTSecret),
		JWKSURL:  cfg.JWKSURL,
		Issuer:   cfg.JWTIssuer,
		Audience: cfg.JWTAudience,
		Leeway:   cfg.JWTLeeway,
	}
	if cfg.JWTPublicKeyFile != "" {
		pem, err := os.ReadFile(cfg.JWTPublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("jwt-public-key: %w", err)
		}
		ac.PublicKeyPEMs = [][]byte{pem}
	}
	v, err := auth.New(ac)
	if errors.Is(err, auth.ErrNoKeys) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("jwt: %w", err)
	}
	return v, nil
}

// checkAnonymous: with no keys configured, joins are open, so every
// listener (routes included) must be on loopback unless the operator
// explicitly allows anonymous access.
func checkAnonymous(cfg Config) error {
	if cfg.AllowAnonymous {
		return nil
	}
	for _, l := range []struct{ name, addr string }{
		{"listen", cfg.Listen}, {"api-listen", cfg.APIListen}, {"ops-listen", cfg.OpsListen}, {"nats-listen", cfg.NATSListen}, {"cluster-listen", cfg.ClusterListen},
	} {
		embedded := l.name == "nats-listen" || l.name == "cluster-listen"
		if l.addr == "" || l.addr == "off" || (embedded && cfg.NATSURL != "") || (l.name == "cluster-listen" && cfg.ClusterName == "") {
			continue
		}
		if !isLoopback(l.addr) {
			return fmt.Errorf("%w: --%s %s (configure JWT keys, or pass --allow-anonymous to run open on purpose)", ErrOpenOnNetwork, l.name, l.addr)
		}
	}
	return nil
}

// checkExposure refuses listeners that would give the network what only
// the operator and trusted services may have, whatever the client
// authentication mode: the ops port (no authentication: metrics, and
// profiles when --pprof is on) off loopback unless AllowRemoteOps, and any
// listener of the embedded NATS server off loopback that lets a
// connection in without credentials. Anyone reaching an open NATS port can
// read every channel and every routed push, answer pushes meant for a
// service, publish anything and delete the streams.
func checkExposure(cfg Config) error {
	if cfg.OpsListen != "" && cfg.OpsListen != "off" && !isLoopback(cfg.OpsListen) && !cfg.AllowRemoteOps {
		return fmt.Errorf("%w: --ops-listen %s serves /metrics and /readyz without authentication; "+
			"bind it to loopback, or pass --allow-remote-ops if only your monitoring network reaches that address",
			ErrOpenOnNetwork, cfg.OpsListen)
	}
	if cfg.NATSURL != "" {
		return nil // the external servers are secured by their own configuration
	}
	ecfg, err := embedConfig(cfg, nil)
	if err != nil {
		return err
	}
	listeners, err := natsembed.Listeners(ecfg)
	if err != nil {
		return fmt.Errorf("cannot configure embedded NATS: %w", err)
	}
	for _, l := range listeners {
		if l.Authenticated || l.Loopback() {
			continue
		}
		switch l.Kind {
		case natsembed.KindClient:
			return fmt.Errorf("%w: --nats-listen %s: the embedded NATS would accept clients without credentials; "+
				"give --nats-config with users, nkeys or accounts (docs/security.md), or keep --nats-listen on loopback or off",
				ErrOpenOnNetwork, cfg.NATSListen)
		case natsembed.KindCluster:
			return fmt.Errorf("%w: --cluster-listen %s: NATS routes would accept any server; "+
				"add cluster { authorization { user: …, password: … } } (or TLS with verify) to --nats-config, or keep --cluster-listen on loopback",
				ErrOpenOnNetwork, cfg.ClusterListen)
		case natsembed.KindMonitor:
			if cfg.AllowRemoteOps {
				continue
			}
			return fmt.Errorf("%w: the NATS monitoring port %s in --nats-config has no authentication; "+
				"bind it to loopback, or pass --allow-remote-ops if only your monitoring network reaches it",
				ErrOpenOnNetwork, l.Addr)
		default:
			return fmt.Errorf("%w: the NATS %s listener %s in --nats-config would accept connections without credentials; configure its authorization",
				ErrOpenOnNetwork, l.Kind, l.Addr)
		}
	}
	return nil
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

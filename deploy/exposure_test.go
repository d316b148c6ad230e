package deploy_test

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
)

// serveExposure applies the rules `fabric serve` checks at start to one
// deployed command line, so that a manifest that would make serve refuse
// to start (or, before those rules, ran it open) fails here: without
// authentication every listener stays on loopback unless --allow-anonymous;
// the ops port leaves loopback only with --allow-remote-ops; the embedded
// NATS client port and routes leave it only with --nats-config.
func serveExposure(st settings) []error {
	loopback := isLoopbackSetting
	on := func(name string) bool { return st.get(name) == "true" }
	var errs []error
	anonymous := st.get("jwt-secret") == "" && st.get("jwt-public-key") == "" && st.get("jwks-url") == ""
	embedded := st.get("nats-url") == ""
	listeners := []string{"listen", "ops-listen"}
	if embedded {
		listeners = append(listeners, "nats-listen")
		if st.get("cluster-name") != "" {
			listeners = append(listeners, "cluster-listen")
		}
	}
	for _, l := range listeners {
		v := st.get(l)
		if loopback(v) {
			continue
		}
		switch {
		case anonymous && !on("allow-anonymous"):
			errs = append(errs, fmt.Errorf("--%s %s without authentication needs --allow-anonymous (serve refuses to start)", l, v))
		case l == "ops-listen" && !on("allow-remote-ops"):
			errs = append(errs, fmt.Errorf("--ops-listen %s needs --allow-remote-ops (serve refuses to start)", v))
		case strings.HasSuffix(l, "-listen") && l != "ops-listen" && l != "listen" && st.get("nats-config") == "":
			errs = append(errs, fmt.Errorf("--%s %s needs --nats-config with NATS users (serve refuses to start)", l, v))
		}
	}
	return errs
}

// natsExposure is the same for `fabric nats`: its client and route
// listeners leave loopback only with --config (users) or --allow-no-auth.
func natsExposure(st settings) []error {
	if st.get("allow-no-auth") == "true" || st.get("config") != "" {
		return nil
	}
	var errs []error
	for _, l := range []string{"listen", "cluster-listen"} {
		if l == "cluster-listen" && st.get("cluster-name") == "" {
			continue
		}
		if v := st.get(l); !isLoopbackSetting(v) {
			errs = append(errs, fmt.Errorf("--%s %s without --config users needs --allow-no-auth (fabric nats refuses to start)", l, v))
		}
	}
	return errs
}

func isLoopbackSetting(hostport string) bool {
	if hostport == "" || hostport == "off" {
		return true // no listener
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// secureDefaults is what no shipped deploy file may do, even where serve
// would accept it: open joins (--allow-anonymous, refused off loopback
// anyway, but a manifest that passes it would run open the day its
// listener moves) and profiles (--pprof serves heap profiles on the ops
// port, which probes and Prometheus reach).
func secureDefaults(st settings) []error {
	var errs []error
	for _, f := range []string{"allow-anonymous", "pprof"} {
		if on, err := strconv.ParseBool(st.get(f)); err == nil && on {
			errs = append(errs, fmt.Errorf("--%s is on: shipped deploy files keep it off (operators opt in)", f))
		}
	}
	return errs
}

func TestSecureDefaultsCatchesOpenings(t *testing.T) {
	fl := map[string]flagInfo{"allow-anonymous": {name: "allow-anonymous"}, "pprof": {name: "pprof"}}
	for _, tc := range []struct {
		args map[string]string
		env  map[string]string
		want int
	}{
		{args: map[string]string{}, want: 0},
		{args: map[string]string{"allow-anonymous": "true"}, want: 1},
		{args: map[string]string{"pprof": "1"}, want: 1},
		{env: map[string]string{"allow-anonymous": "true"}, args: map[string]string{"pprof": "T"}, want: 2},
		{args: map[string]string{"allow-anonymous": "false"}, want: 0},
	} {
		st := settings{flags: fl, args: tc.args, env: tc.env}
		if got := secureDefaults(st); len(got) != tc.want {
			t.Errorf("args %v env %v: %d errors %v, want %d", tc.args, tc.env, len(got), got, tc.want)
		}
	}
}

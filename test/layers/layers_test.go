// Package layers holds the import rules that keep the architecture readable:
// the gateway knows nothing of NATS, the codec and transports know nothing of
// the rest, and nothing imports the binary's wiring. A rule broken here is a
// design change: discuss it, then change the rule, not the other way round.
package layers

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/fabric-rt/fabric/"

// rule: packages whose import path starts with from must not depend, even
// transitively, on any package starting with one of banned.
type rule struct {
	from   string
	banned []string
	why    string
	// allowed are exceptions inside banned: the contract packages that live
	// beside their consumer and are imported by their implementations.
	allowed []string
}

// contracts are the gateway's ports: pure packages (they import nothing of
// the module) that the NATS adapters implement and the server API calls.
var contracts = []string{module + "gateway/broker", module + "gateway/control"}

var rules = []rule{
	{module + "gateway", []string{"github.com/nats-io/", module + "nats/", module + "publisher", module + "schema", module + "cmd/", module + "internal/app", module + "bench"},
		"the gateway reaches the bus only through the broker port (gateway/broker); NATS lives in nats/", nil},
	{module + "gateway/phoenix", []string{module}, "the codec is pure: bytes in, messages out", nil},
	{module + "gateway/transport", []string{module + "gateway/hub", module + "gateway/session", module + "gateway/presence", module + "gateway/phoenix", module + "internal/"},
		"transports move bytes; they know no protocol above frames", nil},
	{module + "gateway/broker", []string{"github.com/nats-io/", module + "nats/", module + "gateway", module + "internal/"}, "the port names topics and positions, not subjects or streams", nil},
	{module + "gateway/control", []string{module}, "the cluster-control contract is shared by the server API and nats/natsctl: it imports neither", nil},
	{module + "gateway/namespace", []string{module, "github.com/nats-io/"}, "namespace policy is pure: config in, answers out; the NATS adapter gets only the stream settings the app derives from it", nil},
	{from: module + "publisher", banned: []string{module + "gateway", module + "internal/", module + "cmd/", module + "bench"}, allowed: contracts, why: "services' library must not drag the gateway into their builds (the ports are pure contracts)"},
	{module + "auth", []string{module}, "token verification and minting is a leaf that gateways, the publisher and backends all use", nil},
	{module + "nats/wire", []string{module}, "the wire contract is a leaf: gateways, the publisher library and plain NATS clients all read it, it reads none of them", nil},
	{from: module + "nats", banned: []string{module + "gateway", module + "publisher", module + "cmd/", module + "internal/", module + "bench"}, allowed: contracts, why: "the NATS adapters implement the ports; they do not call up into their users"},
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps=false", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", module+"...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, deps := fields[0], fields[1:]
		for _, r := range rules {
			if pkg != r.from && !strings.HasPrefix(pkg, r.from+"/") {
				continue
			}
			checked++
			for _, d := range deps {
				for _, b := range r.banned {
					if strings.HasPrefix(d, b) && !strings.HasPrefix(d, r.from) && !slices.Contains(r.allowed, d) {
						t.Errorf("%s depends on %s: %s", strings.TrimPrefix(pkg, module), d, r.why)
					}
				}
			}
		}
	}
	if checked < 10 {
		t.Fatalf("only %d package×rule pairs checked: the listing or the rules are wrong\n%s", checked, out)
	}
}

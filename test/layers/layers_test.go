// Package layers holds the import rules that keep the architecture readable:
// the gateway knows nothing of NATS, the codec and transports know nothing of
// the rest, and nothing imports the binary's wiring. A rule broken here is a
// design change: discuss it, then change the rule, not the other way round.
package layers

import (
	"os/exec"
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
}

var rules = []rule{
	{module + "gateway", []string{"github.com/nats-io/", module + "nats/", module + "publisher", module + "schema", module + "cmd/", module + "internal/app", module + "internal/bench"},
		"the gateway reaches the bus only through the broker port (internal/broker); NATS lives in nats/"},
	{module + "gateway/phoenix", []string{module}, "the codec is pure: bytes in, messages out"},
	{module + "gateway/transport", []string{module + "gateway/hub", module + "gateway/session", module + "gateway/presence", module + "gateway/phoenix", module + "internal/"},
		"transports move bytes; they know no protocol above frames"},
	{module + "internal/broker", []string{"github.com/nats-io/", module + "nats/", module + "gateway"}, "the port names topics and positions, not subjects or streams"},
	{module + "internal/control", []string{module}, "the cluster-control contract is shared by the server API and nats/natsctl: it imports neither"},
	{module + "publisher", []string{module + "gateway", module + "internal/app", module + "cmd/"}, "services' library must not drag the gateway into their builds"},
	{module + "nats/wire", []string{module}, "the wire contract is a leaf: gateways, the publisher library and plain NATS clients all read it, it reads none of them"},
	{module + "nats", []string{module + "gateway", module + "publisher", module + "cmd/", module + "internal/app"}, "the NATS adapter implements the port; it does not call up into its users"},
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
					if strings.HasPrefix(d, b) && !strings.HasPrefix(d, r.from) {
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

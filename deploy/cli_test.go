// Package deploy_test checks the files in deploy/ offline: the Helm chart
// and the Kubernetes manifests rendered from it (strictly decoded into
// their API types, then cross-checked), the compose file, the image's
// command and the Grafana dashboard. Every flag a
// deploy file passes to `fabric serve` or `fabric nats` is checked against
// the real binary's -h output, so a renamed or removed flag fails here
// instead of in a crash-looping pod.
package deploy_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
)

var (
	buildOnce sync.Once
	binDir    string
	binPath   string
	buildErr  error

	helpMu    sync.Mutex
	helpCache = map[string]map[string]flagInfo{}
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		// Fail the run if a test left a goroutine behind (as goleak.VerifyTestMain).
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// fabricBinary builds ./cmd/fabric once per test binary (only when a test
// needs it) and returns its path.
func fabricBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "fabric-deploy-test-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "fabric")
		gobin := "go" // go test puts its own toolchain's bin first on PATH
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command(gobin, append(args, "./cmd/fabric")...)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/fabric: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// flagInfo is one flag as `fabric <sub> -h` prints it.
type flagInfo struct {
	name string
	typ  string // "" for a boolean flag, else string, duration, int, value, ...
	def  string // the "(default ...)" text, unquoted; "" when none is printed
}

var (
	helpFlagLine = regexp.MustCompile(`^  -([A-Za-z0-9][A-Za-z0-9_.-]*)(?: ([a-z]+))?(?:\t(.*))?$`)
	helpDefault  = regexp.MustCompile(`\(default (.*)\)$`)
)

// commandFlags runs `fabric <sub> -h` and parses flag.PrintDefaults output.
func commandFlags(t *testing.T, sub string) map[string]flagInfo {
	t.Helper()
	helpMu.Lock()
	defer helpMu.Unlock()
	if fl, ok := helpCache[sub]; ok {
		return fl
	}
	out, err := exec.Command(fabricBinary(t), sub, "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("fabric %s -h: %v\n%s", sub, err, out)
	}
	fl := parseHelp(string(out))
	// Guard the parser itself: every subcommand used here has these.
	for _, must := range []string{"listen", "log-format", "shutdown-timeout"} {
		if _, ok := fl[must]; !ok {
			t.Fatalf("fabric %s -h: parsed no --%s flag; help format changed?\n%s", sub, must, out)
		}
	}
	helpCache[sub] = fl
	return fl
}

func parseHelp(out string) map[string]flagInfo {
	fl := map[string]flagInfo{}
	var cur *flagInfo
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := helpFlagLine.FindStringSubmatch(line); m != nil {
			if cur != nil {
				fl[cur.name] = *cur
			}
			cur = &flagInfo{name: m[1], typ: m[2]}
			if m[3] != "" {
				cur.def = defaultOf(m[3])
			}
			continue
		}
		if cur != nil && strings.HasPrefix(line, "    \t") {
			if d := defaultOf(line); d != "" {
				cur.def = d
			}
		}
	}
	if cur != nil {
		fl[cur.name] = *cur
	}
	return fl
}

func defaultOf(usage string) string {
	m := helpDefault.FindStringSubmatch(strings.TrimSpace(usage))
	if m == nil {
		return ""
	}
	if s, err := strconv.Unquote(m[1]); err == nil {
		return s
	}
	return m[1]
}

// parseArgs parses a command line the way the flag package does (-x or
// --x, =value or a separate value for non-boolean flags) against the real
// flag set, returning the flags set and every problem found.
func parseArgs(fl map[string]flagInfo, args []string) (map[string]string, []error) {
	set := map[string]string{}
	var errs []error
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			if i+1 < len(args) {
				errs = append(errs, fmt.Errorf("unexpected arguments %q", args[i+1:]))
			}
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			errs = append(errs, fmt.Errorf("unexpected argument %q: the command takes flags only", a))
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		f, ok := fl[name]
		if !ok {
			errs = append(errs, fmt.Errorf("flag --%s does not exist", name))
			continue
		}
		if !hasVal {
			if f.typ == "" {
				val = "true"
			} else if i+1 < len(args) {
				i++
				val = args[i]
			} else {
				errs = append(errs, fmt.Errorf("flag --%s needs a value", name))
				continue
			}
		}
		if err := checkValue(f, val); err != nil {
			errs = append(errs, err)
		}
		set[name] = val
	}
	return set, errs
}

// checkValue type-checks a value that a deploy file gives a flag. Values
// with Kubernetes $(VAR) references are only known at run time.
func checkValue(f flagInfo, v string) error {
	if strings.Contains(v, "$(") {
		return nil
	}
	var err error
	switch f.typ {
	case "":
		_, err = strconv.ParseBool(v)
	case "duration":
		_, err = time.ParseDuration(v)
	case "int", "int64", "uint", "uint64":
		_, err = strconv.ParseInt(v, 10, 64)
	case "float":
		_, err = strconv.ParseFloat(v, 64)
	}
	if err != nil {
		return fmt.Errorf("--%s=%q: %v", f.name, v, err)
	}
	return nil
}

// envFlag maps FABRIC_NATS_URL to nats-url, as internal/config does.
func envFlag(fl map[string]flagInfo, env string) (string, bool) {
	for name := range fl {
		if env == "FABRIC_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_")) {
			return name, true
		}
	}
	return "", false
}

// settings is the effective configuration of one `fabric` process as a
// deploy file describes it: flags win over FABRIC_* variables, which win
// over the YAML file, which wins over the defaults from -h.
type settings struct {
	flags map[string]flagInfo
	args  map[string]string
	env   map[string]string // flag name -> value from FABRIC_*
	file  map[string]string // flag name -> value from the --config file
}

func (s settings) get(name string) string {
	if v, ok := s.args[name]; ok {
		return v
	}
	if v, ok := s.env[name]; ok {
		return v
	}
	if v, ok := s.file[name]; ok {
		return v
	}
	return s.flags[name].def
}

func (s settings) duration(t *testing.T, where, name string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s.get(name))
	if err != nil {
		t.Fatalf("%s: --%s: %v", where, name, err)
	}
	return d
}

// checkServeEnv checks FABRIC_* variables of a `fabric serve` process: an
// unknown one makes serve refuse to start.
func checkServeEnv(fl map[string]flagInfo, env map[string]string) (map[string]string, []error) {
	out := map[string]string{}
	var errs []error
	for k, v := range env {
		if !strings.HasPrefix(k, "FABRIC_") {
			continue
		}
		name, ok := envFlag(fl, k)
		if !ok {
			errs = append(errs, fmt.Errorf("environment variable %s names no `fabric serve` flag (serve rejects it)", k))
			continue
		}
		if err := checkValue(fl[name], v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", k, err))
		}
		out[name] = v
	}
	return out, errs
}

// checkConfigFile checks a fabric.yaml: its keys are serve flag names, plus
// the structured namespaces section.
func checkConfigFile(fl map[string]flagInfo, data []byte) (map[string]string, []error) {
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, []error{fmt.Errorf("config file: %v", err)}
	}
	out := map[string]string{}
	var errs []error
	for k, v := range doc {
		if k == "namespaces" {
			if _, ok := v.(map[string]any); !ok {
				errs = append(errs, errors.New("config file: namespaces is not a mapping"))
			}
			continue
		}
		f, ok := fl[k]
		if !ok || k == "config" {
			errs = append(errs, fmt.Errorf("config file: key %q is no `fabric serve` flag", k))
			continue
		}
		s := fmt.Sprint(v)
		if err := checkValue(f, s); err != nil {
			errs = append(errs, fmt.Errorf("config file: %v", err))
		}
		out[k] = s
	}
	return out, errs
}

func TestParseHelpAndArgs(t *testing.T) {
	help := "Usage of fabric serve:\n" +
		"  -allow-anonymous\n    \tallow open joins\n" +
		"  -drain-window duration\n    \ton SIGTERM (default 5s)\n" +
		"  -listen string\n    \tclient address (default \"127.0.0.1:4000\")\n" +
		"  -routes value\n    \tseed routes\n"
	fl := parseHelp(help)
	if len(fl) != 4 || fl["drain-window"].def != "5s" || fl["listen"].def != "127.0.0.1:4000" ||
		fl["allow-anonymous"].typ != "" || fl["routes"].typ != "value" {
		t.Fatalf("parseHelp: %+v", fl)
	}
	set, errs := parseArgs(fl, []string{"--listen", "0.0.0.0:1", "-allow-anonymous", "--drain-window=2s"})
	if len(errs) != 0 || set["listen"] != "0.0.0.0:1" || set["allow-anonymous"] != "true" || set["drain-window"] != "2s" {
		t.Fatalf("parseArgs: %v %v", set, errs)
	}
	for _, bad := range [][]string{{"--drain-windw=2s"}, {"--drain-window=2"}, {"--listen"}, {"stray"}, {"--allow-anonymous", "false"}} {
		if _, errs := parseArgs(fl, bad); len(errs) == 0 {
			t.Errorf("parseArgs(%q) accepted a bad command line", bad)
		}
	}
	if _, errs := checkServeEnv(fl, map[string]string{"FABRIC_GATEWAY_PORT": "tcp://10.0.0.1:80"}); len(errs) != 1 {
		t.Errorf("checkServeEnv accepted a Service link variable: %v", errs)
	}
	if _, errs := checkConfigFile(fl, []byte("listen: 0.0.0.0:1\nnamespaces: {room: {history: true}}\ndrain-window: 3s\n")); len(errs) != 0 {
		t.Errorf("checkConfigFile: %v", errs)
	}
	if _, errs := checkConfigFile(fl, []byte("listn: 0.0.0.0:1\n")); len(errs) != 1 {
		t.Errorf("checkConfigFile accepted a misspelt key: %v", errs)
	}
}

package deploy_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// dockerfile is what the tests need from deploy/Dockerfile.
type dockerfile struct {
	stages     [][]string // instructions (continuations joined) per FROM
	final      []string
	entrypoint []string
	cmd        []string
}

func readDockerfile(t *testing.T) dockerfile {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var d dockerfile
	var cur string
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		inst := cur + trimmed
		cur = ""
		if strings.HasPrefix(strings.ToUpper(inst), "FROM ") {
			d.stages = append(d.stages, nil)
		}
		if len(d.stages) == 0 {
			if strings.HasPrefix(strings.ToUpper(inst), "ARG ") {
				continue
			}
			t.Fatalf("Dockerfile: %q before the first FROM", inst)
		}
		d.stages[len(d.stages)-1] = append(d.stages[len(d.stages)-1], inst)
	}
	if len(d.stages) == 0 {
		t.Fatal("Dockerfile: no FROM")
	}
	d.final = d.stages[len(d.stages)-1]
	for _, inst := range d.final {
		kw, rest, _ := strings.Cut(inst, " ")
		switch strings.ToUpper(kw) {
		case "ENTRYPOINT":
			d.entrypoint = execForm(t, inst, rest)
		case "CMD":
			d.cmd = execForm(t, inst, rest)
		}
	}
	return d
}

// execForm parses the JSON-array form; the shell form needs /bin/sh, which
// distroless does not have.
func execForm(t *testing.T, inst, rest string) []string {
	t.Helper()
	var argv []string
	if err := yaml.Unmarshal([]byte(rest), &argv); err != nil || !strings.HasPrefix(strings.TrimSpace(rest), "[") {
		t.Errorf("Dockerfile: %q: want the exec (JSON array) form: the image has no shell", inst)
	}
	return argv
}

// TestDockerfile checks, as text (no Docker engine here), that the image
// is a static binary on a libc-free base running as a numeric non-root
// user, with no secrets baked in.
func TestDockerfile(t *testing.T) {
	d := readDockerfile(t)
	from := strings.Fields(d.final[0])
	if len(from) < 2 {
		t.Fatalf("Dockerfile: %q", d.final[0])
	}
	base := from[1]
	if base != "scratch" && !strings.HasPrefix(base, "gcr.io/distroless/static") {
		t.Errorf("Dockerfile: final base %s: want scratch or distroless/static (no libc, so the binary must be static)", base)
	}

	// A static build: CGO_ENABLED=0 on the RUN that builds ./cmd/fabric,
	// or as ENV in that stage.
	static := false
	for _, st := range d.stages[:len(d.stages)-1] {
		env := false
		for _, inst := range st {
			if regexp.MustCompile(`^ENV\s+.*\bCGO_ENABLED=0\b`).MatchString(inst) {
				env = true
			}
			if strings.HasPrefix(inst, "RUN ") && strings.Contains(inst, "go build") && strings.Contains(inst, "./cmd/fabric") {
				static = env || regexp.MustCompile(`\bCGO_ENABLED=0\s+go build\b`).MatchString(inst)
			}
		}
	}
	if !static {
		t.Error("Dockerfile: no `CGO_ENABLED=0 go build ... ./cmd/fabric` in a build stage")
	}

	// Non-root: the last USER of the final stage is numeric (Kubernetes'
	// runAsNonRoot can only verify a numeric uid) and not 0.
	user := ""
	for _, inst := range d.final {
		if kw, rest, _ := strings.Cut(inst, " "); strings.ToUpper(kw) == "USER" {
			user = strings.TrimSpace(rest)
		}
	}
	m := regexp.MustCompile(`^(\d+)(?::(\d+))?$`).FindStringSubmatch(user)
	if m == nil {
		t.Errorf("Dockerfile: final stage USER %q: want a numeric uid[:gid]", user)
	} else if uid, _ := strconv.Atoi(m[1]); uid == 0 || (m[2] != "" && m[2] == "0") {
		t.Errorf("Dockerfile: USER %s runs as root", user)
	}

	// No secrets: no ARG/ENV that looks like one, no key files copied in.
	secretName := regexp.MustCompile(`(?i)(secret|passw|token|api_?key|private_?key|credential|jwt)`)
	secretFile := regexp.MustCompile(`(?i)(\.pem|\.key|id_rsa|id_ed25519|\.env|\.netrc|\.npmrc|credentials)\b`)
	for _, st := range d.stages {
		for _, inst := range st {
			kw, rest, _ := strings.Cut(inst, " ")
			switch strings.ToUpper(kw) {
			case "ARG", "ENV":
				for _, f := range strings.Fields(rest) {
					name, _, _ := strings.Cut(f, "=")
					if secretName.MatchString(name) {
						t.Errorf("Dockerfile: %q: a secret in the image (layers and history keep it); pass it at run time", inst)
					}
				}
			case "COPY", "ADD":
				if secretFile.MatchString(rest) {
					t.Errorf("Dockerfile: %q copies what looks like a secret", inst)
				}
			}
		}
	}
	ignore, err := os.ReadFile("Dockerfile.dockerignore")
	if err != nil || !slices.Contains(strings.Fields(string(ignore)), ".git") {
		t.Errorf("Dockerfile.dockerignore must exclude .git (err %v)", err)
	}

	// The entrypoint is the binary the final stage copies in, and the
	// default command's flags exist.
	copied := false
	for _, inst := range d.final {
		if f := strings.Fields(inst); strings.ToUpper(f[0]) == "COPY" && len(d.entrypoint) > 0 && f[len(f)-1] == d.entrypoint[0] {
			copied = true
		}
	}
	if len(d.entrypoint) != 1 || !copied {
		t.Errorf("Dockerfile: ENTRYPOINT %q: want exactly the binary COPY'd into the final stage", d.entrypoint)
	}
	if len(d.cmd) == 0 || d.cmd[0] != "serve" {
		t.Fatalf("Dockerfile: CMD %q: want serve ...", d.cmd)
	}
	fl := commandFlags(t, "serve")
	args, errs := parseArgs(fl, d.cmd[1:])
	if len(errs) > 0 {
		t.Errorf("Dockerfile: CMD %q: %v", d.cmd, errs)
	}
	// The default command is a demo: --allow-anonymous is the one flag
	// it may need.
	args["allow-anonymous"] = "true"
	for _, err := range serveExposure(settings{flags: fl, args: args, env: map[string]string{}}) {
		t.Errorf("Dockerfile: CMD %q: %v", d.cmd, err)
	}
}

// TestCompose: the compose file parses, every fabric command in it uses
// flags and FABRIC_* variables that exist, published ports are listener
// ports, and stop_grace_period covers each process's shutdown timeout.
func TestCompose(t *testing.T) {
	data, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Entrypoint      []string          `yaml:"entrypoint"`
			Command         []string          `yaml:"command"`
			Environment     map[string]string `yaml:"environment"`
			Ports           []string          `yaml:"ports"`
			Volumes         []string          `yaml:"volumes"`
			DependsOn       []string          `yaml:"depends_on"`
			StopGracePeriod string            `yaml:"stop_grace_period"`
			Image           string            `yaml:"image"`
			Build           struct {
				Context    string `yaml:"context"`
				Dockerfile string `yaml:"dockerfile"`
			} `yaml:"build"`
			Restart string `yaml:"restart"`
		} `yaml:"services"`
		Volumes map[string]any `yaml:"volumes"`
		// Top-level x-* keys are compose extensions (the anchors).
		Extensions map[string]any `yaml:",inline"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a misspelt service key fails
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for k := range doc.Extensions {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("docker-compose.yml: unexpected top-level key %q", k)
		}
	}
	if len(doc.Services) == 0 {
		t.Fatal("docker-compose.yml: no services")
	}
	d := readDockerfile(t)
	subs := map[string]int{}
	for name, s := range doc.Services {
		where := "docker-compose.yml service " + name
		argv := d.entrypoint
		if s.Entrypoint != nil {
			argv = s.Entrypoint
		}
		argv = append(slices.Clone(argv), s.Command...)
		if len(argv) < 2 || argv[0] != "/usr/local/bin/fabric" {
			t.Errorf("%s: command %q: want /usr/local/bin/fabric <sub> ...", where, argv)
			continue
		}
		sub := argv[1]
		subs[sub]++
		if sub != "serve" && sub != "nats" {
			t.Errorf("%s: subcommand %q", where, sub)
			continue
		}
		fl := commandFlags(t, sub)
		args, errs := parseArgs(fl, argv[2:])
		st := settings{flags: fl, args: args, env: map[string]string{}}
		if sub == "serve" {
			var envErrs []error
			st.env, envErrs = checkServeEnv(fl, s.Environment)
			errs = append(errs, envErrs...)
			if cfg := st.get("config"); cfg != "" {
				st.file = composeConfigFile(t, where, s.Volumes, cfg, fl)
			}
			errs = append(errs, serveExposure(st)...)
			errs = append(errs, secureDefaults(st)...)
		} else {
			if len(s.Environment) > 0 {
				errs = append(errs, fmt.Errorf("environment %v: fabric nats reads no variables", s.Environment))
			}
			errs = append(errs, natsExposure(st)...)
		}
		for _, err := range errs {
			t.Errorf("%s: fabric %s: %v", where, sub, err)
		}

		// Published container ports are ports something listens on.
		listeners := map[string]bool{}
		for _, f := range []string{"listen", "ops-listen", "cluster-listen"} {
			if v := st.get(f); v != "" {
				if i := strings.LastIndex(v, ":"); i >= 0 {
					listeners[v[i+1:]] = true
				}
			}
		}
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			if c := parts[len(parts)-1]; !listeners[c] {
				t.Errorf("%s: publishes container port %s, which no listener of fabric %s uses", where, c, sub)
			}
			if len(parts) < 3 || parts[0] != "127.0.0.1" {
				t.Errorf("%s: port %q: publish on 127.0.0.1 only (anonymous demo setup)", where, p)
			}
		}

		// Docker's default stop timeout is 10 s.
		grace := 10 * time.Second
		if s.StopGracePeriod != "" {
			if grace, err = time.ParseDuration(s.StopGracePeriod); err != nil {
				t.Errorf("%s: stop_grace_period: %v", where, err)
			}
		}
		if deadline := st.duration(t, where, "shutdown-timeout"); grace < deadline+graceMargin {
			t.Errorf("%s: stop_grace_period %s < --shutdown-timeout %s + %s: docker kills it mid-shutdown", where, grace, deadline, graceMargin)
		}
		if s.Build.Dockerfile != "" {
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: build: %v", where, err)
			}
		}
		for _, dep := range s.DependsOn {
			if _, ok := doc.Services[dep]; !ok {
				t.Errorf("%s: depends_on %s: no such service", where, dep)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				if _, ok := doc.Volumes[src]; !ok {
					t.Errorf("%s: volume %s is not declared", where, src)
				}
			}
		}
	}
	if subs["serve"] == 0 || subs["nats"] == 0 {
		t.Errorf("docker-compose.yml: want gateways and NATS nodes, got %v", subs)
	}
}

// composeConfigFile finds the --config file among bind mounts and checks it.
func composeConfigFile(t *testing.T, where string, volumes []string, path string, fl map[string]flagInfo) map[string]string {
	t.Helper()
	for _, v := range volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == path {
			data, err := os.ReadFile(filepath.Clean(parts[0]))
			if err != nil {
				t.Errorf("%s: --config %s: %v", where, path, err)
				return nil
			}
			file, errs := checkConfigFile(fl, data)
			for _, err := range errs {
				t.Errorf("%s: %s: %v", where, parts[0], err)
			}
			return file
		}
	}
	t.Errorf("%s: --config=%s is no bind mount", where, path)
	return nil
}

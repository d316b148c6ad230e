package deploy_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/deploy/image"
	"go.yaml.in/yaml/v3"
)

// TestImageCommand: the image's default command (package image) uses
// flags the binary has, and with a JWT key it is a command serve accepts.
// Without one serve refuses it: the image ships no anonymous mode.
func TestImageCommand(t *testing.T) {
	cmd := image.DefaultCmd
	if len(cmd) == 0 || cmd[0] != "serve" {
		t.Fatalf("image command %q: want serve ...", cmd)
	}
	fl := commandFlags(t, "serve")
	args, errs := parseArgs(fl, cmd[1:])
	for _, err := range errs {
		t.Errorf("image command %q: %v", cmd, err)
	}
	st := settings{flags: fl, args: args, env: map[string]string{}}
	if len(serveExposure(st)) == 0 {
		t.Errorf("image command %q runs without authentication on a non-loopback listener", cmd)
	}
	st.env["jwt-secret"] = "$(from FABRIC_JWT_SECRET)"
	for _, err := range append(serveExposure(st), secureDefaults(st)...) {
		t.Errorf("image command %q with FABRIC_JWT_SECRET: %v", cmd, err)
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
			Restart         string            `yaml:"restart"`
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
	subs := map[string]int{}
	for name, s := range doc.Services {
		where := "docker-compose.yml service " + name
		argv := []string{image.Binary}
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
		if s.Image == "" {
			t.Errorf("%s: no image (build it with task image, load it into Docker)", where)
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

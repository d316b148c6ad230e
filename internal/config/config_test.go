package config

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// listFlag accumulates, like a repeated "-peer" flag; it proves Load calls
// Set only once per flag (for the winning source).
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type namespace struct {
	Name    string `yaml:"name"`
	MaxSubs int    `yaml:"max_subs"`
}

type namespaces struct {
	Default string      `yaml:"default"`
	List    []namespace `yaml:"list"`
}

func newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("fabric", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("config", "", "YAML config file")
	fs.String("listen", ":8080", "client listen address")
	fs.String("ops-listen", ":9090", "ops listen address")
	fs.String("nats-url", "nats://localhost:4222", "NATS URL")
	fs.Bool("debug", false, "debug logging")
	fs.Int("workers", 4, "worker count")
	fs.Duration("timeout", 30*time.Second, "request timeout")
	fs.String("api-token", "", "API token")
	fs.String("origins", "", "comma-separated allowed origins")
	fs.Var(&listFlag{}, "peer", "peer address (repeatable)")
	return fs
}

const fileToken = "$FILE"

func TestLoad(t *testing.T) {
	type tc struct {
		name     string
		args     []string
		env      []string
		file     string // written to a temp file; "$FILE" in args/env is its path
		noConfig bool   // do not pass --config automatically
		sections bool
		want     map[string]string // flag → effective String()
		sources  map[string]string // flag → source (subset)
		rest     []string
		wantErr  []string // substrings, all must appear
	}
	tests := []tc{
		{
			name:    "defaults only",
			want:    map[string]string{"listen": ":8080", "workers": "4", "timeout": "30s", "debug": "false"},
			sources: map[string]string{"listen": "default", "workers": "default", "config": "default"},
		},
		{
			name:    "file only",
			file:    "listen: \":7000\"\nworkers: 8\n",
			want:    map[string]string{"listen": ":7000", "workers": "8", "ops-listen": ":9090"},
			sources: map[string]string{"listen": "file", "workers": "file", "ops-listen": "default", "config": "flag"},
		},
		{
			name:    "env overrides file",
			file:    "listen: \":7000\"\nworkers: 8\n",
			env:     []string{"FABRIC_LISTEN=:7100"},
			want:    map[string]string{"listen": ":7100", "workers": "8"},
			sources: map[string]string{"listen": "env", "workers": "file"},
		},
		{
			name:    "flag overrides env and file",
			file:    "listen: \":7000\"\n",
			env:     []string{"FABRIC_LISTEN=:7100"},
			args:    []string{"--listen", ":7200"},
			want:    map[string]string{"listen": ":7200"},
			sources: map[string]string{"listen": "flag"},
		},
		{
			name:    "accumulating flag gets only the winning value",
			file:    "peer: a\n",
			env:     []string{"FABRIC_PEER=b"},
			want:    map[string]string{"peer": "b"},
			sources: map[string]string{"peer": "env"},
		},
		{
			name:    "positional args returned",
			args:    []string{"--debug", "serve", "extra"},
			rest:    []string{"serve", "extra"},
			want:    map[string]string{"debug": "true"},
			sources: map[string]string{"debug": "flag"},
		},
		{
			name:    "unknown flag",
			args:    []string{"--lisen", ":1"},
			wantErr: []string{"unknown flag --lisen (did you mean --listen?)"},
		},
		{
			name:    "unknown flag without suggestion",
			args:    []string{"--zzzzzz"},
			wantErr: []string{"unknown flag --zzzzzz"},
		},
		{
			name:    "unknown env var with suggestion",
			env:     []string{"FABRIC_LISTN=:1"},
			wantErr: []string{"unknown environment variable FABRIC_LISTN (did you mean FABRIC_LISTEN?)"},
		},
		{
			name:    "unknown env var without suggestion",
			env:     []string{"FABRIC_COMPLETELY_DIFFERENT=1"},
			wantErr: []string{"unknown environment variable FABRIC_COMPLETELY_DIFFERENT"},
		},
		{
			name:    "non-FABRIC env ignored",
			env:     []string{"PATH=/bin", "LISTEN=:1", "fabric_listen=:2", "HOME=/root", "=C:=C:\\"},
			want:    map[string]string{"listen": ":8080"},
			sources: map[string]string{"listen": "default"},
		},
		{
			name:    "empty env value is passed through",
			env:     []string{"FABRIC_NATS_URL="},
			want:    map[string]string{"nats-url": ""},
			sources: map[string]string{"nats-url": "env"},
		},
		{
			name:    "empty env value rejected by bool flag",
			env:     []string{"FABRIC_DEBUG="},
			wantErr: []string{`FABRIC_DEBUG: invalid value ""`},
		},
		{
			name:    "unknown YAML key with suggestion",
			file:    "listn: \":1\"\n",
			wantErr: []string{`line 1: unknown key "listn" (did you mean "listen"?)`},
		},
		{
			name:    "unknown YAML key without suggestion",
			file:    "listen: \":1\"\nfrobnicate: true\n",
			wantErr: []string{`line 2: unknown key "frobnicate"`},
		},
		{
			name:    "underscore alias",
			file:    "ops_listen: \":9100\"\nnats_url: nats://n:4222\n",
			want:    map[string]string{"ops-listen": ":9100", "nats-url": "nats://n:4222"},
			sources: map[string]string{"ops-listen": "file"},
		},
		{
			name:    "dash spelling",
			file:    "ops-listen: \":9100\"\n",
			want:    map[string]string{"ops-listen": ":9100"},
			sources: map[string]string{"ops-listen": "file"},
		},
		{
			name:    "both spellings is an error",
			file:    "ops-listen: \":9100\"\nops_listen: \":9200\"\n",
			wantErr: []string{`line 2: ops_listen: already set at line 1`},
		},
		{
			name:    "duplicate key is an error",
			file:    "listen: a\nlisten: b\n",
			wantErr: []string{`line 2: listen: already set at line 1`},
		},
		{
			name:    "bad value from flag names the flag",
			args:    []string{"--workers", "many"},
			wantErr: []string{`invalid value "many" for flag -workers`},
		},
		{
			name:    "bad value from env names the variable",
			env:     []string{"FABRIC_WORKERS=many"},
			wantErr: []string{`FABRIC_WORKERS: invalid value "many"`},
		},
		{
			name:    "bad value from file names file and key",
			file:    "workers: many\n",
			wantErr: []string{`config.yaml: workers: line 1: invalid value "many"`},
		},
		{
			name:    "null value is an error",
			file:    "listen:\n",
			wantErr: []string{"config.yaml: listen: line 1: null value"},
		},
		{
			name:    "mapping for a flag is an error",
			file:    "listen:\n  host: x\n",
			wantErr: []string{"config.yaml: listen: line 2: expected a scalar or a list"},
		},
		{
			name:    "YAML list is comma-joined",
			file:    "origins:\n  - https://a.example\n  - https://b.example\n",
			want:    map[string]string{"origins": "https://a.example,https://b.example"},
			sources: map[string]string{"origins": "file"},
		},
		{
			name: "YAML flow list is comma-joined",
			file: "origins: [x, 'y', 3]\n",
			want: map[string]string{"origins": "x,y,3"},
		},
		{
			name:    "YAML list item with comma is an error",
			file:    "origins: [\"a,b\", c]\n",
			wantErr: []string{"contains a comma"},
		},
		{
			name: "bool int duration from YAML",
			file: "debug: true\nworkers: 16\ntimeout: 1m30s\n",
			want: map[string]string{"debug": "true", "workers": "16", "timeout": "1m30s"},
		},
		{
			name: "bool int duration from env",
			env:  []string{"FABRIC_DEBUG=1", "FABRIC_WORKERS=0x10", "FABRIC_TIMEOUT=250ms"},
			want: map[string]string{"debug": "true", "workers": "16", "timeout": "250ms"},
		},
		{
			name:    "bad duration from YAML",
			file:    "timeout: 30\n",
			wantErr: []string{"config.yaml: timeout: line 1: invalid value \"30\""},
		},
		{
			name:     "sections decoded",
			sections: true,
			file:     "listen: \":1\"\nnamespaces:\n  default: chat\n  list:\n    - name: chat\n      max_subs: 10\n",
			want:     map[string]string{"listen": ":1"},
		},
		{
			name:     "section unknown field rejected with original line",
			sections: true,
			file:     "listen: \":1\"\nnamespaces:\n  default: chat\n  list:\n    - name: chat\n      max_sub: 10\n",
			wantErr:  []string{"config.yaml: namespaces:", "line 6: field max_sub not found"},
		},
		{
			name:    "section key without registration is unknown",
			file:    "namespaces:\n  default: chat\n",
			wantErr: []string{`unknown key "namespaces"`},
		},
		{
			name:     "FABRIC_CONFIG selects the file",
			noConfig: true,
			env:      []string{"FABRIC_CONFIG=" + fileToken},
			file:     "listen: \":7000\"\n",
			want:     map[string]string{"listen": ":7000"},
			sources:  map[string]string{"listen": "file", "config": "env"},
		},
		{
			name:     "--config beats FABRIC_CONFIG",
			noConfig: true,
			args:     []string{"--config", fileToken},
			env:      []string{"FABRIC_CONFIG=/nonexistent/other.yaml"},
			file:     "listen: \":7000\"\n",
			want:     map[string]string{"listen": ":7000"},
			sources:  map[string]string{"config": "flag"},
		},
		{
			name:     "missing file is an error",
			noConfig: true,
			args:     []string{"--config", "/nonexistent/fabric.yaml"},
			wantErr:  []string{"config file:", "/nonexistent/fabric.yaml"},
		},
		{
			name:    "invalid YAML is an error",
			file:    "listen: [unclosed\n",
			wantErr: []string{"config.yaml"},
		},
		{
			name:    "top level must be a mapping",
			file:    "- a\n- b\n",
			wantErr: []string{"top level must be a mapping"},
		},
		{
			name:    "multiple documents rejected",
			file:    "listen: a\n---\nlisten: b\n",
			wantErr: []string{"multiple YAML documents"},
		},
		{
			name: "empty file is fine",
			file: "# nothing yet\n",
			want: map[string]string{"listen": ":8080"},
		},
		{
			name:    "config key inside the file is an error",
			file:    "config: other.yaml\n",
			wantErr: []string{`key "config" is not allowed`},
		},
		{
			name: "anchors and aliases resolve",
			file: "ops-listen: &addr \":9500\"\nlisten: *addr\n",
			want: map[string]string{"listen": ":9500", "ops-listen": ":9500"},
		},
		{
			name:    "all problems reported together",
			env:     []string{"FABRIC_LISTN=x", "FABRIC_WORKERS=many"},
			file:    "listn: x\n",
			wantErr: []string{"FABRIC_LISTN", "FABRIC_WORKERS", `unknown key "listn"`},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var path string
			if tt.file != "" {
				path = filepath.Join(t.TempDir(), "config.yaml")
				if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			subst := func(in []string) []string {
				out := make([]string, len(in))
				for i, s := range in {
					out[i] = strings.ReplaceAll(s, fileToken, path)
				}
				return out
			}
			args := subst(tt.args)
			if path != "" && !tt.noConfig {
				args = append([]string{"--config", path}, args...)
			}
			env := append([]string{}, subst(tt.env)...) // non-nil: never the real environment

			ns := namespaces{Default: "preset"}
			opts := Options{EnvPrefix: "FABRIC_", ConfigFlag: "config", Environ: env}
			if tt.sections {
				opts.Sections = map[string]any{"namespaces": &ns}
			}
			fs := newFlagSet()
			rest, err := Load(fs, args, opts)

			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Load: want error containing %q, got nil", tt.wantErr)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(rest) != 0 || len(tt.rest) != 0 {
				if !reflect.DeepEqual(rest, tt.rest) {
					t.Errorf("rest = %q, want %q", rest, tt.rest)
				}
			}
			for name, want := range tt.want {
				if got := fs.Lookup(name).Value.String(); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			src := Sources(fs)
			for name, want := range tt.sources {
				if src[name] != want {
					t.Errorf("source of %s = %q, want %q", name, src[name], want)
				}
			}
			if tt.sections {
				want := namespaces{Default: "chat", List: []namespace{{Name: "chat", MaxSubs: 10}}}
				if !reflect.DeepEqual(ns, want) {
					t.Errorf("section = %+v, want %+v", ns, want)
				}
			}
		})
	}
}

// A command-line mistake is one line, printed by nobody but the caller; the
// flag list is printed for -h only.
func TestCommandLineErrorIsShort(t *testing.T) {
	for _, args := range [][]string{{"--lisen", ":1"}, {"--workers", "many"}, {"--listen"}} {
		fs := newFlagSet()
		var out strings.Builder
		fs.SetOutput(&out)
		_, err := Load(fs, args, Options{EnvPrefix: "FABRIC_", Environ: []string{}})
		var ue *UsageError
		if !errors.As(err, &ue) || ue.Command != fs.Name() || strings.Contains(ue.Msg, "\n") {
			t.Errorf("%q: err = %#v, want a one-line *UsageError for %q", args, err, fs.Name())
		}
		if out.Len() != 0 {
			t.Errorf("%q: printed %q, want nothing", args, out.String())
		}
	}
	fs := newFlagSet()
	var out strings.Builder
	fs.SetOutput(&out)
	if _, err := Load(fs, []string{"-h"}, Options{EnvPrefix: "FABRIC_", Environ: []string{}}); err != flag.ErrHelp || !strings.Contains(out.String(), "-listen") {
		t.Errorf("-h: err = %v, printed %q; want flag.ErrHelp and the flag list", err, out.String())
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		_, err := Load(newFlagSet(), []string{arg}, Options{EnvPrefix: "FABRIC_", ConfigFlag: "config", Environ: []string{}})
		if err != flag.ErrHelp {
			t.Errorf("%s: err = %v, want flag.ErrHelp", arg, err)
		}
	}
}

func TestSectionKeepsDefaults(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.yaml")
	if err := os.WriteFile(path, []byte("namespaces:\n  list: [{name: a}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := namespaces{Default: "preset"}
	_, err := Load(newFlagSet(), []string{"--config", path}, Options{
		EnvPrefix: "FABRIC_", ConfigFlag: "config", Environ: []string{},
		Sections: map[string]any{"namespaces": &ns},
	})
	if err != nil {
		t.Fatal(err)
	}
	if ns.Default != "preset" || len(ns.List) != 1 || ns.List[0].Name != "a" {
		t.Errorf("section = %+v", ns)
	}
}

func TestSecretNotInError(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Int("secret-port", 0, "")
	_, err := Load(fs, nil, Options{EnvPrefix: "FABRIC_", Environ: []string{"FABRIC_SECRET_PORT=hunter2"}})
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("err = %v; want it to name FABRIC_SECRET_PORT without the value", err)
	}
}

func TestProgrammingErrors(t *testing.T) {
	t.Run("colliding flag names", func(t *testing.T) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.String("a-b", "", "")
		fs.String("a_b", "", "")
		if _, err := Load(fs, nil, Options{EnvPrefix: "FABRIC_", Environ: []string{}}); err == nil {
			t.Error("want error for a-b/a_b collision")
		}
	})
	t.Run("config flag missing", func(t *testing.T) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		if _, err := Load(fs, nil, Options{ConfigFlag: "config", Environ: []string{}}); err == nil {
			t.Error("want error for missing config flag")
		}
	})
	t.Run("section not a pointer", func(t *testing.T) {
		if _, err := Load(newFlagSet(), nil, Options{Environ: []string{}, Sections: map[string]any{"ns": namespaces{}}}); err == nil {
			t.Error("want error for non-pointer section")
		}
	})
	t.Run("section collides with flag", func(t *testing.T) {
		if _, err := Load(newFlagSet(), nil, Options{Environ: []string{}, Sections: map[string]any{"ops_listen": &namespaces{}}}); err == nil {
			t.Error("want error for section/flag collision")
		}
	})
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"nats-url":   "FABRIC_NATS_URL",
		"ops-listen": "FABRIC_OPS_LISTEN",
		"debug":      "FABRIC_DEBUG",
		"tls.cert":   "FABRIC_TLS_CERT",
		"v2-Mode":    "FABRIC_V2_MODE",
	} {
		if got := EnvName("FABRIC_", in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSourcesWithoutLoad(t *testing.T) {
	fs := newFlagSet()
	if err := fs.Parse([]string{"--debug"}); err != nil {
		t.Fatal(err)
	}
	src := Sources(fs)
	if src["debug"] != "flag" || src["listen"] != "default" {
		t.Errorf("Sources = %v", src)
	}
}

func TestRedacted(t *testing.T) {
	fs := newFlagSet()
	fs.String("jwt-secret", "", "")
	fs.String("nats-password", "", "")
	fs.String("tls-key-file", "", "")
	env := []string{"FABRIC_API_TOKEN=tok123", "FABRIC_JWT_SECRET=s3cr3t", "FABRIC_TLS_KEY_FILE=/k.pem"}
	if _, err := Load(fs, []string{"--listen", ":1"}, Options{EnvPrefix: "FABRIC_", ConfigFlag: "config", Environ: env}); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("effective config", Redacted(fs, Sources(fs))...)
	out := buf.String()
	for _, secret := range []string{"tok123", "s3cr3t", "/k.pem"} {
		if strings.Contains(out, secret) {
			t.Errorf("log leaks %q: %s", secret, out)
		}
	}
	for _, want := range []string{
		"api-token.value=[redacted] api-token.source=env",
		"jwt-secret.value=[redacted]",
		"tls-key-file.value=[redacted]",
		`nats-password.value="" nats-password.source=default`, // empty: nothing to hide
		"listen.value=:1 listen.source=flag",
		"workers.value=4 workers.source=default",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log missing %q: %s", want, out)
		}
	}

	// Every element is a slog.Attr, so callers may also use LogAttrs.
	for _, a := range Redacted(fs, nil) {
		if _, ok := a.(slog.Attr); !ok {
			t.Fatalf("element %T is not slog.Attr", a)
		}
	}
}

func TestErrorsAreErrorsIs(t *testing.T) {
	_, err := Load(newFlagSet(), []string{"--config", "/nonexistent/x.yaml"}, Options{EnvPrefix: "FABRIC_", ConfigFlag: "config", Environ: []string{}})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want errors.Is(err, os.ErrNotExist)", err)
	}
}

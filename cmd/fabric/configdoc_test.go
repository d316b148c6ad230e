package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/config"
)

var updateConfigDoc = flag.Bool("update-config-doc", false, "rewrite the flag table in "+configDoc+" from `fabric serve`'s flag set")

// configDoc is where `fabric serve`'s flags are documented for users. Its
// flag table is generated from the flag set (usage strings are the single
// source), between these two markers.
const (
	configDoc      = "docs/configuration.md"
	configDocBegin = "<!-- flags: generated from `fabric serve`'s flag set by `go test ./cmd/fabric -run TestConfigDoc -update-config-doc`; edit the usage strings in cmd/fabric/serve.go, not this table -->"
	configDocEnd   = "<!-- end of generated flags -->"
)

var (
	docRef  = regexp.MustCompile(`\bdocs/([a-z0-9-]+\.md)\b`)
	flagRef = regexp.MustCompile(`(^|[\s(/])(--[a-z0-9-]+)\b`)
)

// flagTable renders fs as a Markdown table: flag, environment variable,
// default and usage. A usage's --flag mentions become code and its
// docs/x.md mentions become links relative to docs/.
func flagTable(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString("| flag | environment | default | what |\n|---|---|---|---|\n")
	fs.VisitAll(func(f *flag.Flag) {
		env := config.EnvName("FABRIC_", f.Name)
		def := ""
		if f.DefValue != "" && f.DefValue != "[]" {
			def = "`" + f.DefValue + "`"
		}
		usage := strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(f.Usage)
		usage = flagRef.ReplaceAllString(usage, "$1`$2`")
		usage = docRef.ReplaceAllString(usage, "[$1]($1)")
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s |\n", f.Name, env, def, usage)
	})
	return b.String()
}

// The flag table in docs/configuration.md is exactly what the flag set
// says, so a flag cannot be added, renamed or given a new default without
// the documentation following (run with -update-config-doc to rewrite it).
func TestConfigDoc(t *testing.T) {
	var cfg app.Config
	var s1, s2 string
	var d time.Duration
	want := flagTable(serveFlags(&cfg, &s1, &s2, &d))
	if n := strings.Count(want, "\n| `--"); n < 30 {
		t.Fatalf("only %d flags rendered", n)
	}
	path := "../../" + configDoc
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	before, rest, ok := strings.Cut(doc, configDocBegin+"\n")
	if !ok {
		t.Fatalf("%s: no begin marker %q", configDoc, configDocBegin)
	}
	got, after, ok := strings.Cut(rest, configDocEnd)
	if !ok {
		t.Fatalf("%s: no end marker %q", configDoc, configDocEnd)
	}
	if got == want {
		return
	}
	if *updateConfigDoc {
		if err := os.WriteFile(path, []byte(before+configDocBegin+"\n"+want+configDocEnd+after), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote the flag table in %s", configDoc)
		return
	}
	t.Errorf("%s's flag table is out of date with `fabric serve`'s flags; run: go test ./cmd/fabric -run TestConfigDoc -update-config-doc\n%s", configDoc, lineDiff(got, want))
}

// lineDiff lists the lines only in got (-) and only in want (+).
func lineDiff(got, want string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	g, w := in(got), in(want)
	var b strings.Builder
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

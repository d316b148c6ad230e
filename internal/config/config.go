package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Source names reported by Sources.
const (
	SourceDefault = "default"
	SourceFile    = "file"
	SourceEnv     = "env"
	SourceFlag    = "flag"
)

// Options configures Load.
type Options struct {
	// EnvPrefix is prepended to every environment variable name, e.g.
	// "FABRIC_". Every variable carrying the prefix must name a flag. An
	// empty prefix disables the environment source entirely, because without
	// a prefix there is no way to tell our variables from PATH or HOME.
	EnvPrefix string

	// ConfigFlag is the name of the flag holding the YAML file path, e.g.
	// "config". Its value is resolved with the usual precedence (flag, then
	// env, then the flag's default) before the file is read. An empty
	// ConfigFlag disables the file source. A non-empty default on that flag
	// makes the file mandatory: a missing file is then an error.
	ConfigFlag string

	// Environ is the environment as "KEY=value" strings. nil means
	// os.Environ(), mirroring exec.Cmd.Env, so production callers cannot
	// forget it; tests should pass a non-nil slice (possibly empty) so the
	// developer's shell cannot leak into them.
	Environ []string

	// Sections are top-level YAML keys that are not flags (e.g.
	// "namespaces"). Each value must be a non-nil pointer; the section's YAML
	// is decoded into it with unknown fields rejected. Fields the YAML does
	// not mention keep their current values, so callers can pre-fill
	// defaults. A null section leaves the value untouched.
	Sections map[string]any
}

// EnvName maps a flag name to its environment variable: upper case, with
// every character that is not a letter or digit replaced by an underscore
// (shells only allow [A-Za-z0-9_] in names), so "nats-url" with prefix
// "FABRIC_" becomes "FABRIC_NATS_URL".
func EnvName(prefix, flagName string) string {
	var b strings.Builder
	b.Grow(len(prefix) + len(flagName))
	b.WriteString(prefix)
	for _, r := range flagName {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// yamlAlias is the underscore spelling accepted for a flag name in YAML.
func yamlAlias(flagName string) string {
	return strings.ReplaceAll(flagName, "-", "_")
}

// fileValue is one flag setting read from the YAML file.
type fileValue struct {
	key   string // key as spelled in the file, for error messages
	value string
	line  int
}

// Load parses args into fs and then applies environment and file values to
// the flags the command line did not set, with precedence
// flag > env > file > default. It returns the positional arguments left
// after the flags.
//
// fs should be created with flag.ContinueOnError. The command line is parsed
// by ParseFlags: a mistake there is a one-line *UsageError (with a
// suggestion for a mistyped flag, as for env and YAML names) and prints
// nothing; -h and --help print the usage and return flag.ErrHelp unwrapped. Environment and
// file problems are returned as errors and nothing is printed. When several
// problems are found they are all returned, joined with errors.Join, so an
// operator can fix them in one go.
func Load(fs *flag.FlagSet, args []string, opts Options) (rest []string, err error) {
	// Programming errors first: they would make the name mappings ambiguous.
	byEnv, byKey, err := index(fs, opts)
	if err != nil {
		return nil, err
	}

	if err := ParseFlags(fs, args); err != nil {
		return nil, err
	}
	rest = fs.Args()

	sources := make(map[string]string)
	fs.VisitAll(func(f *flag.Flag) { sources[f.Name] = SourceDefault })
	fs.Visit(func(f *flag.Flag) { sources[f.Name] = SourceFlag })

	var errs []error
	envVals, envErrs := readEnv(opts, byEnv)
	errs = append(errs, envErrs...)

	var fileVals map[string]fileValue
	path, haveFile := configPath(fs, opts, sources, envVals)
	if haveFile {
		data, err := os.ReadFile(path)
		if err != nil {
			return rest, errors.Join(append(errs, fmt.Errorf("config file: %w", err))...)
		}
		var fileErrs []error
		fileVals, fileErrs, err = parseFile(path, data, opts, byKey)
		if err != nil {
			// Not usable at all; report it alongside any env problems.
			return rest, errors.Join(append(errs, err)...)
		}
		errs = append(errs, fileErrs...)
		// Sections are decoded only from a file whose keys are all valid:
		// the second decoding pass would otherwise repeat the same
		// complaints (duplicate keys) in yaml's words.
		if len(fileErrs) == 0 {
			if err := decodeSections(path, data, opts.Sections); err != nil {
				errs = append(errs, err)
			}
		}
	}

	// Apply exactly one value per flag: the winner.
	fs.VisitAll(func(f *flag.Flag) {
		if sources[f.Name] == SourceFlag {
			return
		}
		if v, ok := envVals[f.Name]; ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: invalid value %s: %v",
					EnvName(opts.EnvPrefix, f.Name), quoteValue(f.Name, v), err))
				return
			}
			sources[f.Name] = SourceEnv
			return
		}
		if fv, ok := fileVals[f.Name]; ok {
			if err := f.Value.Set(fv.value); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s: line %d: invalid value %s: %v",
					path, fv.key, fv.line, quoteValue(f.Name, fv.value), err))
				return
			}
			sources[f.Name] = SourceFile
		}
	})

	record(fs, sources)
	if len(errs) > 0 {
		return rest, errors.Join(errs...)
	}
	return rest, nil
}

// quoteValue quotes a value for an error message, hiding it when the flag
// holds a secret: error messages end up in logs too.
func quoteValue(flagName, v string) string {
	if sensitive(flagName) && v != "" {
		return redacted
	}
	return fmt.Sprintf("%q", v)
}

// index builds the env-name and YAML-key lookup tables and rejects flag sets
// where two names would collide (e.g. flags "a-b" and "a_b" both map to
// FABRIC_A_B), because one of them could then never be set from env or file.
func index(fs *flag.FlagSet, opts Options) (byEnv, byKey map[string]string, err error) {
	byEnv = make(map[string]string)
	byKey = make(map[string]string)
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := EnvName(opts.EnvPrefix, f.Name)
		if other, ok := byEnv[env]; ok {
			errs = append(errs, fmt.Errorf("config: flags %q and %q both map to %s", other, f.Name, env))
		}
		byEnv[env] = f.Name
		for _, k := range []string{f.Name, yamlAlias(f.Name)} {
			if other, ok := byKey[k]; ok && other != f.Name {
				errs = append(errs, fmt.Errorf("config: flags %q and %q both accept YAML key %q", other, f.Name, k))
			}
			byKey[k] = f.Name
		}
	})
	if opts.ConfigFlag != "" && fs.Lookup(opts.ConfigFlag) == nil {
		errs = append(errs, fmt.Errorf("config: Options.ConfigFlag %q names no flag", opts.ConfigFlag))
	}
	names := make([]string, 0, len(opts.Sections))
	for name := range opts.Sections {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		ptr := opts.Sections[name]
		if v := reflect.ValueOf(ptr); v.Kind() != reflect.Pointer || v.IsNil() {
			errs = append(errs, fmt.Errorf("config: section %q: want a non-nil pointer, got %T", name, ptr))
		}
		// The name becomes a struct tag in decodeSections; keep it simple.
		if name == "" || name == "-" || strings.ContainsAny(name, "\",`: \t\n") {
			errs = append(errs, fmt.Errorf("config: section name %q is not a plain YAML key", name))
		}
		if f, ok := byKey[name]; ok {
			errs = append(errs, fmt.Errorf("config: section %q collides with flag %q", name, f))
		}
	}
	return byEnv, byKey, errors.Join(errs...)
}

// readEnv collects prefixed variables and maps them to flag names. A
// prefixed variable naming no flag is an error: it is almost always a typo
// or a setting that was renamed, and ignoring it would run the gateway with
// a configuration the operator did not ask for.
func readEnv(opts Options, byEnv map[string]string) (map[string]string, []error) {
	vals := make(map[string]string)
	if opts.EnvPrefix == "" {
		return vals, nil
	}
	environ := opts.Environ
	if environ == nil {
		environ = os.Environ()
	}
	seen := make(map[string]bool)
	var errs []error
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, opts.EnvPrefix) {
			continue
		}
		// First occurrence wins, as with os.Getenv.
		if seen[k] {
			continue
		}
		seen[k] = true
		name, ok := byEnv[k]
		if !ok {
			// Compare without the shared prefix so the distance limit
			// scales with the part the operator actually typed.
			cands := make([]string, 0, len(byEnv))
			for e := range byEnv {
				cands = append(cands, strings.TrimPrefix(e, opts.EnvPrefix))
			}
			msg := "unknown environment variable " + k
			if c := closest(strings.TrimPrefix(k, opts.EnvPrefix), cands); c != "" {
				msg += " (did you mean " + opts.EnvPrefix + c + "?)"
			}
			errs = append(errs, errors.New(msg))
			continue
		}
		// An empty value is the operator's explicit choice; pass it on and
		// let the flag decide whether "" is acceptable.
		vals[name] = v
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return vals, errs
}

// configPath resolves the config file path with the normal precedence. The
// command line has already been parsed and env values are known, but env
// values have not been applied yet, so resolve by hand.
func configPath(fs *flag.FlagSet, opts Options, sources, envVals map[string]string) (string, bool) {
	if opts.ConfigFlag == "" {
		return "", false
	}
	f := fs.Lookup(opts.ConfigFlag)
	path := f.Value.String()
	if sources[f.Name] != SourceFlag {
		if v, ok := envVals[f.Name]; ok {
			path = v
		}
	}
	return path, path != ""
}

// parseFile parses the YAML file and returns flag values keyed by flag name.
// A fatal error means the file could not be used at all; errs lists
// per-key problems.
func parseFile(path string, data []byte, opts Options, byKey map[string]string) (vals map[string]fileValue, errs []error, fatal error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			// Empty or comment-only file: nothing to set.
			return map[string]fileValue{}, nil, nil
		}
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	// Only one document: a second one would otherwise be silently ignored.
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		return nil, nil, fmt.Errorf("%s: line %d: multiple YAML documents are not supported", path, extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return map[string]fileValue{}, nil, nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return map[string]fileValue{}, nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, nil, fmt.Errorf("%s: line %d: top level must be a mapping of settings", path, root.Line)
	}

	vals = make(map[string]fileValue)
	seen := make(map[string]int) // flag or section name → line of first key
	for i := 0; i+1 < len(root.Content); i += 2 {
		kn, vn := root.Content[i], resolve(root.Content[i+1])
		if kn.Kind != yaml.ScalarNode {
			errs = append(errs, fmt.Errorf("%s: line %d: keys must be plain strings", path, kn.Line))
			continue
		}
		key := kn.Value
		if _, ok := opts.Sections[key]; ok {
			if line, dup := seen[key]; dup {
				errs = append(errs, fmt.Errorf("%s: line %d: %s: already set at line %d", path, kn.Line, key, line))
			}
			seen[key] = kn.Line
			continue
		}
		name, ok := byKey[key]
		if !ok {
			msg := fmt.Sprintf("%s: line %d: unknown key %q", path, kn.Line, key)
			if c := closest(key, candidates(byKey, opts)); c != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", c)
			}
			errs = append(errs, errors.New(msg))
			continue
		}
		if opts.ConfigFlag != "" && name == opts.ConfigFlag {
			// The file cannot choose itself; accepting the key would invite
			// the belief that it redirects to another file.
			errs = append(errs, fmt.Errorf("%s: line %d: key %q is not allowed in the config file; use --%s or %s",
				path, kn.Line, key, opts.ConfigFlag, EnvName(opts.EnvPrefix, opts.ConfigFlag)))
			continue
		}
		if line, dup := seen[name]; dup {
			errs = append(errs, fmt.Errorf("%s: line %d: %s: already set at line %d (%q and %q name the same flag)",
				path, kn.Line, key, line, vals[name].key, key))
			continue
		}
		seen[name] = kn.Line
		v, err := scalarString(vn)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: line %d: %v", path, key, vn.Line, err))
			continue
		}
		vals[name] = fileValue{key: key, value: v, line: vn.Line}
	}
	return vals, errs, nil
}

// candidates lists the YAML keys worth suggesting: flag names (dash form,
// the canonical spelling) and section names, but not the config flag.
func candidates(byKey map[string]string, opts Options) []string {
	var out []string
	for k, name := range byKey {
		if k == name && name != opts.ConfigFlag {
			out = append(out, k)
		}
	}
	for s := range opts.Sections {
		out = append(out, s)
	}
	return out
}

// resolve follows YAML aliases (*anchor) to the node they refer to.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// scalarString converts a YAML value to the string a flag's Set receives.
// Scalars keep their literal spelling so "30s", 0x10 or true mean exactly
// what they mean on the command line. Lists are joined with commas.
func scalarString(n *yaml.Node) (string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			// "listen:" with no value is far more likely a mistake than a
			// request for the default; make the operator say what they mean.
			return "", errors.New("null value (remove the key to use the default, or write \"\" for an empty string)")
		}
		return n.Value, nil
	case yaml.SequenceNode:
		items := make([]string, 0, len(n.Content))
		for _, c := range n.Content {
			c = resolve(c)
			if c.Kind != yaml.ScalarNode || c.ShortTag() == "!!null" {
				return "", fmt.Errorf("line %d: list items must be non-null scalars", c.Line)
			}
			if strings.Contains(c.Value, ",") {
				return "", fmt.Errorf("line %d: list item %q contains a comma; lists are joined with commas", c.Line, c.Value)
			}
			items = append(items, c.Value)
		}
		return strings.Join(items, ","), nil
	default:
		return "", errors.New("expected a scalar or a list of scalars")
	}
}

// decodeSections decodes each section present in the file into its target,
// rejecting unknown fields. yaml.Node.Decode cannot reject unknown fields,
// and re-encoding the node would lose the original line numbers, so the
// file is decoded again with KnownFields into a struct built on the fly: one
// field for the section, tagged with its name and pre-set to the caller's
// pointer (yaml.v3 decodes into a non-nil pointer in place, keeping
// defaults), plus an inline map soaking up every other top-level key, which
// parseFile has already validated.
func decodeSections(path string, data []byte, sections map[string]any) error {
	if len(sections) == 0 {
		return nil
	}
	names := make([]string, 0, len(sections))
	for name := range sections {
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		ptr := reflect.ValueOf(sections[name])
		st := reflect.StructOf([]reflect.StructField{
			{Name: "Section", Type: ptr.Type(), Tag: reflect.StructTag(`yaml:"` + name + `"`)},
			{Name: "Rest", Type: reflect.TypeFor[map[string]yaml.Node](), Tag: `yaml:",inline"`},
		})
		holder := reflect.New(st)
		holder.Elem().Field(0).Set(ptr)
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(holder.Interface()); err != nil && !errors.Is(err, io.EOF) {
			errs = append(errs, fmt.Errorf("%s: %s: %w", path, name, err))
		}
	}
	return errors.Join(errs...)
}

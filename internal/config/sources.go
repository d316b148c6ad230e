package config

import (
	"flag"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"weak"
)

// redacted replaces secret values in logs and error messages.
const redacted = "[redacted]"

// sensitiveWords mark flags whose values must not be logged. Matching is by
// substring of the lower-cased flag name, so "jwt-secret", "api-token",
// "tls-key-file" and "nats-password" are all covered.
var sensitiveWords = []string{"secret", "token", "password", "key"}

func sensitive(flagName string) bool {
	n := strings.ToLower(flagName)
	for _, w := range sensitiveWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// Load's signature is fixed (it returns only the leftover args), so the
// per-flag sources it determines are kept here, keyed by the FlagSet. The key
// is a weak pointer and a cleanup removes the entry once the FlagSet is
// garbage collected, so tests that build many FlagSets do not leak.
var registry struct {
	sync.Mutex
	m map[weak.Pointer[flag.FlagSet]]map[string]string
}

func record(fs *flag.FlagSet, sources map[string]string) {
	key := weak.Make(fs)
	registry.Lock()
	defer registry.Unlock()
	if registry.m == nil {
		registry.m = make(map[weak.Pointer[flag.FlagSet]]map[string]string)
	}
	if _, ok := registry.m[key]; !ok {
		runtime.AddCleanup(fs, func(k weak.Pointer[flag.FlagSet]) {
			registry.Lock()
			delete(registry.m, k)
			registry.Unlock()
		}, key)
	}
	registry.m[key] = sources
}

// Sources reports where each flag's effective value came from: "default",
// "file", "env" or "flag" (the Source* constants). It reflects the last Load
// of fs. For a FlagSet never passed to Load it reports "flag" for flags set
// on it (fs.Visit) and "default" for the rest. The returned map is a copy.
func Sources(fs *flag.FlagSet) map[string]string {
	registry.Lock()
	recorded := registry.m[weak.Make(fs)]
	registry.Unlock()

	out := make(map[string]string)
	fs.VisitAll(func(f *flag.Flag) {
		if s, ok := recorded[f.Name]; ok {
			out[f.Name] = s
		} else {
			out[f.Name] = SourceDefault
		}
	})
	if recorded == nil {
		fs.Visit(func(f *flag.Flag) { out[f.Name] = SourceFlag })
	}
	return out
}

// Redacted returns one slog.Attr per flag, in flag-name order, ready to pass
// to a logger:
//
//	logger.Info("effective config", config.Redacted(fs, config.Sources(fs))...)
//
// Each attr is a group {value, source}. Values of flags whose name contains
// "secret", "token", "password" or "key" are replaced by "[redacted]" unless
// empty: an empty value reveals nothing and "not set" is exactly what an
// operator debugging a missing credential needs to see. A nil sources map
// means Sources(fs).
func Redacted(fs *flag.FlagSet, sources map[string]string) []any {
	if sources == nil {
		sources = Sources(fs)
	}
	var attrs []any
	fs.VisitAll(func(f *flag.Flag) {
		v := f.Value.String()
		if v != "" && sensitive(f.Name) {
			v = redacted
		}
		src, ok := sources[f.Name]
		if !ok {
			src = SourceDefault
		}
		attrs = append(attrs, slog.Group(f.Name,
			slog.String("value", v),
			slog.String("source", src),
		))
	})
	return attrs
}

// closest returns the candidate nearest to word by edit distance
// (ignoring case and treating "_" like "-"), or "" when nothing is close
// enough to be a plausible typo.
func closest(word string, candidates []string) string {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "-")) }
	w := norm(word)
	best, bestD := "", -1
	for _, c := range candidates {
		d := levenshtein(w, norm(c))
		if bestD < 0 || d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	// Roughly one edit per four characters: at least one, at most three.
	if limit := min(max(1, len(w)/4), 3); bestD < 0 || bestD > limit {
		return ""
	}
	return best
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}

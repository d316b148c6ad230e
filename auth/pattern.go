package auth

import (
	"errors"
	"strings"
)

// MaxPatternLen bounds the length of a pattern string.
const MaxPatternLen = 1024

// SubPlaceholder is the template segment replaced by a subject.
const SubPlaceholder = "{sub}"

type segKind uint8

const (
	segLit  segKind = iota // matches exactly this text
	segStar                // "*": exactly one non-empty segment
	segTail                // ">": one or more remaining segments (last only)
	segSub                 // "{sub}": unbound template, never matches
)

type segment struct {
	kind segKind
	lit  string
}

// Pattern is a topic pattern: segments separated by ':'. A segment "*"
// matches exactly one segment; a final segment ">" matches one or more
// remaining segments; a segment "{sub}" is a template that Bind replaces with
// a subject, taken as one literal segment. Any other segment is literal.
// The zero Pattern matches nothing.
type Pattern struct {
	raw  string
	segs []segment
}

// ParsePattern parses a pattern such as "room:*", "game:42:>" or
// "user:{sub}". Empty segments, "*" or ">" mixed with other characters, ">"
// anywhere but last, and braces other than a whole "{sub}" segment are errors.
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, errors.New("auth: empty pattern")
	}
	if len(s) > MaxPatternLen {
		return Pattern{}, errors.New("auth: pattern too long")
	}
	n := strings.Count(s, ":") + 1
	p := Pattern{raw: s, segs: make([]segment, 0, n)}
	rest := s
	for i := 0; i < n; i++ {
		seg, after, _ := strings.Cut(rest, ":")
		rest = after
		switch {
		case seg == "":
			return Pattern{}, errors.New("auth: pattern has an empty segment")
		case seg == "*":
			p.segs = append(p.segs, segment{kind: segStar})
		case seg == ">":
			if i != n-1 {
				return Pattern{}, errors.New("auth: '>' must be the last segment of a pattern")
			}
			p.segs = append(p.segs, segment{kind: segTail})
		case seg == SubPlaceholder:
			p.segs = append(p.segs, segment{kind: segSub})
		case strings.ContainsAny(seg, "*>{}"):
			return Pattern{}, errors.New("auth: '*', '>' and '{sub}' must be whole segments")
		default:
			for j := 0; j < len(seg); j++ {
				if c := seg[j]; c < 0x20 || c == 0x7f {
					return Pattern{}, errors.New("auth: control character in pattern")
				}
			}
			p.segs = append(p.segs, segment{kind: segLit, lit: seg})
		}
	}
	return p, nil
}

// MustParsePattern is ParsePattern that panics on error, for constants.
func MustParsePattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// ParsePatterns parses every string; the first error wins.
func ParsePatterns(ss []string) ([]Pattern, error) {
	if len(ss) == 0 {
		return nil, nil
	}
	out := make([]Pattern, 0, len(ss))
	for _, s := range ss {
		p, err := ParsePattern(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Literal returns a pattern that matches exactly topic: every segment is
// literal, even "*" or ">" (a per-join token's "channel" claim names one
// topic, never a wildcard). An empty topic gives the zero Pattern.
func Literal(topic string) Pattern {
	if topic == "" {
		return Pattern{}
	}
	return Pattern{raw: topic, segs: []segment{{kind: segLit, lit: topic}}}
}

// String returns the pattern as written (for a bound pattern, with the
// subject substituted).
func (p Pattern) String() string { return p.raw }

// MarshalText implements encoding.TextMarshaler.
func (p Pattern) MarshalText() ([]byte, error) { return []byte(p.raw), nil }

// UnmarshalText implements encoding.TextUnmarshaler (JSON and YAML configs).
func (p *Pattern) UnmarshalText(b []byte) error {
	q, err := ParsePattern(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// IsTemplate reports whether the pattern still has a "{sub}" segment.
func (p Pattern) IsTemplate() bool {
	for _, s := range p.segs {
		if s.kind == segSub {
			return true
		}
	}
	return false
}

// Bind replaces every "{sub}" segment by sub, taken as one literal segment.
// It reports false, and the returned pattern matches nothing, when the
// pattern is a template and sub cannot be one literal segment: empty, or
// containing ':' (which would widen or shift the match) or a control
// character. '*' and '>' in sub stay literal and never act as wildcards.
// A pattern without "{sub}" is returned unchanged.
func (p Pattern) Bind(sub string) (Pattern, bool) {
	if !p.IsTemplate() {
		return p, true
	}
	if !validSubject(sub) {
		return Pattern{}, false
	}
	q := Pattern{segs: make([]segment, len(p.segs))}
	var b strings.Builder
	for i, s := range p.segs {
		if i > 0 {
			b.WriteByte(':')
		}
		switch s.kind {
		case segSub:
			q.segs[i] = segment{kind: segLit, lit: sub}
			b.WriteString(sub)
		case segStar:
			q.segs[i] = s
			b.WriteByte('*')
		case segTail:
			q.segs[i] = s
			b.WriteByte('>')
		default:
			q.segs[i] = s
			b.WriteString(s.lit)
		}
	}
	q.raw = b.String()
	return q, true
}

func validSubject(sub string) bool {
	if sub == "" || len(sub) > MaxPatternLen {
		return false
	}
	for i := 0; i < len(sub); i++ {
		if c := sub[i]; c == ':' || c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// Match reports whether topic matches the pattern. Wildcards never match an
// empty segment; an unbound "{sub}" never matches. It does not allocate.
func (p Pattern) Match(topic string) bool {
	if len(p.segs) == 0 || topic == "" {
		return false
	}
	rest := topic
	for i, s := range p.segs {
		if rest == "" && i > 0 {
			return false // topic ran out of segments
		}
		switch s.kind {
		case segTail:
			// One or more remaining segments, none empty.
			return rest != "" && !hasEmptySegment(rest)
		case segLit:
			// A literal may itself contain ':' (Literal(topic)), so compare
			// by prefix and require a boundary after it.
			if !strings.HasPrefix(rest, s.lit) {
				return false
			}
			after := rest[len(s.lit):]
			switch {
			case after == "":
				rest = ""
				if i != len(p.segs)-1 {
					return false
				}
				continue
			case after[0] == ':':
				rest = after[1:]
				if rest == "" {
					return false // trailing ':' = empty last segment
				}
			default:
				return false
			}
		case segStar:
			seg, after, found := strings.Cut(rest, ":")
			if seg == "" {
				return false
			}
			if found {
				if after == "" {
					return false
				}
				rest = after
			} else {
				rest = ""
				if i != len(p.segs)-1 {
					return false
				}
			}
		default: // segSub: unbound template
			return false
		}
	}
	return rest == ""
}

func hasEmptySegment(s string) bool {
	return s == "" || s[0] == ':' || s[len(s)-1] == ':' || strings.Contains(s, "::")
}

// Authorizer is what the gateway asks before a join or a push. It is the
// method set of gateway/session.Policy.
type Authorizer interface {
	CanJoin(topic string) bool
	CanPublish(topic string) bool
}

// Grants is a set of join and publish patterns, from a namespace config or
// from a token. It implements Authorizer: a topic is allowed when any
// pattern matches. Patterns still holding "{sub}" never match; call For
// first.
type Grants struct {
	Join    []Pattern
	Publish []Pattern
}

var _ Authorizer = Grants{}

// For binds "{sub}" in every pattern to sub. Templates that sub cannot fill
// safely (see Pattern.Bind) are dropped, so they grant nothing.
func (g Grants) For(sub string) Grants {
	return Grants{Join: bindAll(g.Join, sub), Publish: bindAll(g.Publish, sub)}
}

// Merge returns the union of g and o (a topic allowed by either is allowed).
func (g Grants) Merge(o Grants) Grants {
	return Grants{
		Join:    append(append(make([]Pattern, 0, len(g.Join)+len(o.Join)), g.Join...), o.Join...),
		Publish: append(append(make([]Pattern, 0, len(g.Publish)+len(o.Publish)), g.Publish...), o.Publish...),
	}
}

// CanJoin reports whether any join pattern matches topic.
func (g Grants) CanJoin(topic string) bool { return matchAny(g.Join, topic) }

// CanPublish reports whether any publish pattern matches topic.
func (g Grants) CanPublish(topic string) bool { return matchAny(g.Publish, topic) }

func bindAll(ps []Pattern, sub string) []Pattern {
	if len(ps) == 0 {
		return nil
	}
	out := make([]Pattern, 0, len(ps))
	for _, p := range ps {
		if q, ok := p.Bind(sub); ok {
			out = append(out, q)
		}
	}
	return out
}

func matchAny(ps []Pattern, topic string) bool {
	for _, p := range ps {
		if p.Match(topic) {
			return true
		}
	}
	return false
}

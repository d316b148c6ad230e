package presence

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
	"unique"
)

// Members' keys and metas: the presence key, the meta object as sent
// (app meta, phx_ref, online_at) and its JSON encoding.
//
// A local member's meta is not stored as JSON: it is a handle on the app
// part's encoding, shared by every member (of any channel) with the same
// app meta, plus the phx_ref counter and online_at; the object is written
// out when a state or diff is encoded. docs/presence.md has the sizes.

// meta is one meta of a channel as a state or diff lists it: a local
// member's fields (raw nil) or a remote gateway's meta as received.
type meta struct {
	key string
	id  uint64          // non-zero: the key is key + id in base 36 (a connection id, local.connKey)
	raw json.RawMessage // remote: the whole object as received
	metaFields
}

// appendKey writes m's key as it is sent (not quoted).
func (m *meta) appendKey(dst []byte) []byte {
	dst = append(dst, m.key...)
	if m.id != 0 {
		dst = strconv.AppendUint(dst, m.id, 36)
	}
	return dst
}

// keyLen is len(m.appendKey(nil)).
func (m *meta) keyLen() int {
	if m.id != 0 {
		return len(m.key) + digits(m.id, 36)
	}
	return len(m.key)
}

// compareKeys orders metas by their keys as sent (so metas of one key are
// next to each other, whichever way each stores it).
func compareKeys(a, b *meta) int {
	if a.id == 0 && b.id == 0 {
		return strings.Compare(a.key, b.key)
	}
	var x, y [48]byte
	return bytes.Compare(a.appendKey(x[:0]), b.appendKey(y[:0]))
}

// appendQuotedKey writes m's key as a JSON string.
func appendQuotedKey(dst []byte, m *meta) []byte {
	if m.id == 0 {
		return appendString(dst, m.key)
	}
	dst = appendString(dst, m.key)
	dst = strconv.AppendUint(dst[:len(dst)-1], m.id, 36) // base 36 digits need no escaping
	return append(dst, '"')
}

// metaFields is what makes a local member's meta object.
type metaFields struct {
	app       appMeta // zero: no app meta
	ref, prev uint64  // phx_ref and phx_ref_prev counters (prev 0: none)
	online    int64   // online_at, unix ms
}

// appMeta is the app's meta as sent, without its braces (`"name":"a"`),
// canonical: one copy per distinct value in the process, freed with its
// last member.
type appMeta = unique.Handle[string]

// refPrefix is the start of this gateway's phx_refs as JSON: `"F<id>`.
// A ref is unique across the fleet: the gateway id plus a counter.
func refPrefix(id string) []byte {
	b := appendString(nil, "F"+id)
	return b[:len(b)-1]
}

// newRef is the next phx_ref counter (never 0).
func (t *Tracker) newRef() uint64 { return t.refs.Add(1) }

// appendRef writes ref n as a JSON string.
func (t *Tracker) appendRef(dst []byte, n uint64) []byte {
	dst = append(dst, t.refPrefix...)
	dst = strconv.AppendUint(dst, n, 36)
	return append(dst, '"')
}

// appendMeta writes m's meta object: a remote one as received, a local
// one as {<app fields>,"online_at":…,"phx_ref":…[,"phx_ref_prev":…]}.
func (t *Tracker) appendMeta(dst []byte, m *meta) []byte {
	if m.raw != nil {
		return append(dst, m.raw...)
	}
	dst = append(dst, '{')
	if m.app != (appMeta{}) {
		dst = append(dst, m.app.Value()...)
		dst = append(dst, ',')
	}
	dst = append(dst, `"online_at":`...)
	dst = strconv.AppendInt(dst, m.online, 10)
	dst = append(dst, `,"phx_ref":`...)
	dst = t.appendRef(dst, m.ref)
	if m.prev != 0 {
		dst = append(dst, `,"phx_ref_prev":`...)
		dst = t.appendRef(dst, m.prev)
	}
	return append(dst, '}')
}

// metaSize is len(appendMeta(nil, m)), without writing it.
func (t *Tracker) metaSize(m *meta) int {
	if m.raw != nil {
		return len(m.raw)
	}
	var num [20]byte
	n := len(`{"online_at":,"phx_ref":"}`) + len(strconv.AppendInt(num[:0], m.online, 10)) + len(t.refPrefix) + digits(m.ref, 36)
	if m.app != (appMeta{}) {
		n += len(m.app.Value()) + 1
	}
	if m.prev != 0 {
		n += len(`,"phx_ref_prev":"`) + len(t.refPrefix) + digits(m.prev, 36)
	}
	return n
}

func digits(n, base uint64) int {
	d := 1
	for n >= base {
		n /= base
		d++
	}
	return d
}

const maxKeyLen = 256

// parseParams decodes join params as an object, skipping the decode for
// the common empty one ({}); nil when there is nothing to read.
func parseParams(params []byte) map[string]json.RawMessage {
	if p := bytes.TrimSpace(params); len(p) == 0 || bytes.Equal(p, []byte("{}")) {
		return nil
	}
	var p map[string]json.RawMessage
	if json.Unmarshal(params, &p) != nil {
		return nil
	}
	return p
}

// presenceKey: the authenticated user; in anonymous mode the join param
// presence_key or user (a string or a number); else the connection id.
func presenceKey(m Member) string {
	return keyOf(m, parseParams(m.Params))
}

func keyOf(m Member, p map[string]json.RawMessage) string {
	if m.Sub != "" {
		return m.Sub
	}
	for _, name := range []string{"presence_key", "user"} {
		raw := bytes.TrimSpace(p[name])
		if len(raw) == 0 {
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			if s != "" && len(s) <= maxKeyLen {
				return s
			}
			continue
		}
		var n json.Number
		if json.Unmarshal(raw, &n) == nil && len(n) <= maxKeyLen {
			return n.String()
		}
	}
	return m.ConnID
}

// appFields is the app's meta from params[metaKey] (an object's fields
// are merged in; any other JSON value is kept under metaKey), without
// phx_ref, phx_ref_prev and online_at, which the app cannot override. It
// is measured as it will be sent — decoded and re-encoded without HTML
// escaping, as Phoenix's Jason writes it — and dropped when over maxBytes:
// measuring the input instead let a 1 KiB meta of '&' become 6 KiB of
// \u0026 escapes in every state.
func appFields(p map[string]json.RawMessage, metaKey string, maxBytes int) appMeta {
	// Re-encoding can shrink a value (whitespace, \u escapes) or grow
	// it (invalid UTF-8): only an input far over the bound is refused
	// unparsed.
	v := bytes.TrimSpace(p[metaKey])
	if len(v) == 0 || len(v) > 8*maxBytes {
		return appMeta{}
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber() // numbers keep their digits
	var val any
	if dec.Decode(&val) != nil || val == nil {
		return appMeta{}
	}
	app, ok := val.(map[string]any)
	if !ok {
		app = map[string]any{metaKey: val}
	}
	delete(app, "phx_ref")
	delete(app, "phx_ref_prev")
	delete(app, "online_at")
	enc := encodeJSON(app)
	if len(enc) > maxBytes || len(enc) <= 2 {
		return appMeta{} // too big, or {}
	}
	return unique.Make(string(enc[1 : len(enc)-1]))
}

// buildMeta is a member's whole meta object as appendMeta writes it, for
// tests and the control API.
func (t *Tracker) buildMeta(ref, prev uint64, now time.Time, params []byte, metaKey string) json.RawMessage {
	m := meta{metaFields: metaFields{app: appFields(parseParams(params), metaKey, t.cfg.MaxMetaBytes), ref: ref, prev: prev, online: now.UnixMilli()}}
	return t.appendMeta(nil, &m)
}

// encodeJSON is json.Marshal without HTML escaping (<, >, & stay as they
// are, as in Phoenix's output): escaping would multiply an app's bytes
// by up to six after its size was checked.
func encodeJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// appendString writes s as a JSON string, as encodeJSON would (no HTML
// escaping), without allocating for the usual key (printable ASCII).
func appendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return append(dst, encodeJSON(s)...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

package presence

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// Members' keys and metas: the presence key, the meta object as sent
// (app meta, phx_ref, online_at) and its JSON encoding.

type meta struct {
	key string
	ref string
	raw json.RawMessage // the whole meta object, phx_ref included
}

func (t *Tracker) newRef() string {
	// Unique across the fleet: the gateway id plus a counter.
	return "F" + t.id + strconv.FormatUint(t.refs.Add(1), 36)
}

const maxKeyLen = 256

// presenceKey: the authenticated user; in anonymous mode the join param
// presence_key or user (a string or a number); else the connection id.
func presenceKey(m Member) string {
	if m.Sub != "" {
		return m.Sub
	}
	var p map[string]json.RawMessage
	if json.Unmarshal(m.Params, &p) == nil {
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
	}
	return m.ConnID
}

// buildMeta is a member's meta: the app's meta from params[metaKey] (an
// object's fields are merged in; any other JSON value is kept under
// metaKey), then phx_ref, phx_ref_prev and online_at (unix ms), which the
// app cannot override. The app part is measured as it will be sent —
// decoded and re-encoded without HTML escaping, as Phoenix's Jason
// writes it — and dropped when over maxBytes: measuring the input instead
// let a 1 KiB meta of '&' become 6 KiB of \u0026 escapes in every state.
func buildMeta(ref, prev string, now time.Time, params []byte, metaKey string, maxBytes int) json.RawMessage {
	fields := map[string]any{}
	var p map[string]json.RawMessage
	if json.Unmarshal(params, &p) == nil {
		// Re-encoding can shrink a value (whitespace, \u escapes) or grow
		// it (invalid UTF-8): only an input far over the bound is refused
		// unparsed.
		if v := bytes.TrimSpace(p[metaKey]); len(v) > 0 && len(v) <= 8*maxBytes {
			dec := json.NewDecoder(bytes.NewReader(v))
			dec.UseNumber() // numbers keep their digits
			var val any
			if dec.Decode(&val) == nil && val != nil {
				app, ok := val.(map[string]any)
				if !ok {
					app = map[string]any{metaKey: val}
				}
				delete(app, "phx_ref")
				delete(app, "phx_ref_prev")
				delete(app, "online_at")
				if len(encodeJSON(app)) <= maxBytes {
					fields = app
				}
			}
		}
	}
	fields["phx_ref"] = ref
	if prev != "" {
		fields["phx_ref_prev"] = prev
	}
	fields["online_at"] = now.UnixMilli()
	return encodeJSON(fields)
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

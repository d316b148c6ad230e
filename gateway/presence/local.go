package presence

import "encoding/json"

// Local returns this gateway's members of topic (metas by presence key,
// as Phoenix Presence lists them), and false when topic has no presence
// here (not a presence namespace, or no local member). For the control
// API.
func (t *Tracker) Local(topic string) (map[string][]json.RawMessage, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := t.channel(topic)
	if ch == nil {
		return nil, false
	}
	l := make(map[string][]json.RawMessage, ch.local.len())
	for m := range ch.local.all() {
		mt := ch.meta(m)
		key := string(mt.appendKey(nil))
		l[key] = append(l[key], t.appendMeta(nil, &mt))
	}
	return l, len(l) > 0
}

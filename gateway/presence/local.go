package presence

import "encoding/json"

// Local returns this gateway's members of topic (metas by presence key,
// as Phoenix Presence lists them), and false when topic has no presence
// here (not a presence namespace, or no local member). For the control
// API; the metas are shared, not copied: do not modify them.
func (t *Tracker) Local(topic string) (map[string][]json.RawMessage, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := t.chans[topic]
	if ch == nil {
		return nil, false
	}
	l := ch.localState()
	return l, len(l) > 0
}

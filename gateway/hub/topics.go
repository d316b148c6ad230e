package hub

// Topics calls fn for every topic with a live channel on this gateway and
// its local member count. fn runs without the hub's locks; the counts are
// a snapshot. For control operations (list the active channels), not the
// hot path: it visits every channel.
func (h *Hub) Topics(fn func(topic string, members int)) {
	var chans []*channel
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		for _, ch := range sh.topics {
			chans = append(chans, ch)
		}
		sh.mu.Unlock()
	}
	for _, ch := range chans {
		if n := ch.len(); n > 0 {
			fn(ch.topic, n)
		}
	}
}

// MemberKeys returns the keys (Member.Key) of topic's local members.
func (h *Hub) MemberKeys(topic string) []any {
	sh := h.shard(topic)
	sh.mu.Lock()
	ch := sh.topics[topic]
	sh.mu.Unlock()
	if ch == nil {
		return nil
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	keys := make([]any, len(ch.members))
	for i, m := range ch.members {
		keys[i] = m.Key
	}
	return keys
}

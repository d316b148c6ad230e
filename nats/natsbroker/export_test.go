package natsbroker

// StopWatchingMarks drops the broker's mark subscriptions, as a lost
// republished mark would (core NATS: at most once).
func (b *Broker) StopWatchingMarks() {
	for _, s := range b.markSubs {
		_ = s.Unsubscribe()
	}
}

// ShardOfTopic is the dispatch shard a subscription of topic lands in.
func (b *Broker) ShardOfTopic(topic string) int {
	subj, err := b.subject(topic)
	if err != nil {
		panic(err)
	}
	if b.namespaceOf(topic) != nil {
		subj = b.livePrefix + subj[len(b.prefix):]
	}
	sh := b.disp.shardOf(subj)
	for i := range b.disp.shards {
		if &b.disp.shards[i] == sh {
			return i
		}
	}
	panic("no shard")
}

// SetLiveThresholds overrides a persistent namespace's switch thresholds
// (wildcard.go): to the wildcard above up feeds, back below down (-1:
// never). Call it before the namespace's first subscription.
func (b *Broker) SetLiveThresholds(ns string, up, down int) {
	l := &b.namespaces[ns].live
	l.mu.Lock()
	l.up, l.down = up, down
	l.mu.Unlock()
}

// LiveSwitching reports whether a switch of ns's live feed is under way.
func (b *Broker) LiveSwitching(ns string) bool {
	l := &b.namespaces[ns].live
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.switching
}

// OwnLiveSubscriptions is how many of ns's feeds have a subscription of
// their own.
func (b *Broker) OwnLiveSubscriptions(ns string) int {
	k := 0
	for _, s := range b.liveSubs() {
		s.mu.Lock()
		if s.ns.name == ns && s.sub != nil && !s.closed {
			k++
		}
		s.mu.Unlock()
	}
	return k
}

// LiveThresholds is ns's switch thresholds (see SetLiveThresholds).
func (b *Broker) LiveThresholds(ns string) (up, down int) {
	l := &b.namespaces[ns].live
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.up, l.down
}

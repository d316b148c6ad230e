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

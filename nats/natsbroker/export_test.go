package natsbroker

// StopWatchingMarks drops the broker's mark subscriptions, as a lost
// republished mark would (core NATS: at most once).
func (b *Broker) StopWatchingMarks() {
	for _, s := range b.markSubs {
		_ = s.Unsubscribe()
	}
}

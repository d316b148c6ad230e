package natsbroker

// watchMarks subscribes to the moderation marks of every persistent
// namespace.
func (b *Broker) watchMarks() error { return nil }

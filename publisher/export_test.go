package publisher

import "time"

// StopAdvisories makes the publisher miss every stream advisory, as it
// would across a reconnect.
func (p *Publisher) StopAdvisories() { p.advSub.Unsubscribe() }

// Advance moves the publisher's clock forward.
func (p *Publisher) Advance(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.nowFunc
	p.nowFunc = func() time.Time { return now().Add(d) }
}

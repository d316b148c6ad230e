package session

import (
	"strconv"
	"time"

	"github.com/fabric-rt/fabric/gateway/phoenix"
	"github.com/fabric-rt/fabric/gateway/transport"
)

// Limits: per-connection token buckets for joins, pushes and push bytes,
// and the close (4029) for sustained abuse.

// bucket is a token bucket (HandleMessage goroutine only) kept as one
// number, the moment it is full again (monoNow(); 0 = full), instead of
// a level and the time of the last take: half the bytes, the same
// behaviour. It holds burst - (full-now)·rate tokens, at most burst, and
// below zero when a take left it in debt.
type bucket struct {
	full int64
}

// tokens is what b holds at now.
func (b *bucket) tokens(now int64, rate, burst float64) float64 {
	if b.full <= now {
		return burst
	}
	return burst - time.Duration(b.full-now).Seconds()*rate
}

// take removes n tokens at now.
func (b *bucket) take(now int64, n, rate float64) {
	b.full = max(b.full, now) + int64(n/rate*float64(time.Second))
}

// clockBase anchors monoNow: durations since it come from the monotonic
// clock and fit in an int64, half the size of a time.Time per bucket.
var clockBase = time.Now()

func monoNow() int64 { return int64(time.Since(clockBase)) + 1 }

// limit takes one token or answers rate_limited; sustained abuse closes
// the connection with 4029.
func (s *Session) limit(b *bucket, rate float64, burst int, joinRef phoenix.Ref, f phoenix.Frame) bool {
	if rate <= 0 {
		return true
	}
	if burst < 1 {
		burst = 1
	}
	now := monoNow()
	tokens := b.tokens(now, rate, float64(burst))
	if tokens >= 1 {
		b.take(now, 1, rate)
		return true
	}
	wait := time.Duration((1 - tokens) / rate * float64(time.Second))
	resp := []byte(`{"reason":"rate_limited","retry_after_ms":`)
	resp = strconv.AppendInt(resp, max(1, wait.Milliseconds()), 10)
	s.reply(joinRef, f.Ref, f.Topic, false, append(resp, '}'))
	if time.Duration(now-s.refusedSince) > 10*time.Second {
		s.refused, s.refusedSince = 0, now
	}
	if s.refused++; int(s.refused) > 10*burst {
		s.cfg.Logger.Info("connection closed for sustained abuse", "remote", s.conn.RemoteAddr())
		// Replies already queued (a join's ok, the rate_limited
		// answers) go out first: the client is told what happened to
		// each request, as Phoenix's socket would before closing.
		if qc, ok := s.conn.(transport.QueuedCloser); ok {
			qc.CloseAfterQueued(transport.CloseRateLimited, "rate limited")
		} else {
			s.conn.Close(transport.CloseRateLimited, "rate limited")
		}
	}
	return false
}

// limitBytes takes n bytes from the push byte bucket or answers
// rate_limited like limit (sustained abuse closes the connection there).
func (s *Session) limitBytes(b *bucket, n int, f phoenix.Frame) bool {
	rate := s.cfg.PushBytesRate
	if rate <= 0 {
		return true
	}
	burst := float64(max(s.cfg.PushBytesBurst, 1))
	now := monoNow()
	tokens := b.tokens(now, rate, burst)
	// A push bigger than the burst passes on a full bucket (and leaves it
	// in debt), so that the limit never refuses a message for its size
	// alone: that is --max-message-size's job.
	if tokens >= float64(n) || tokens >= burst {
		b.take(now, float64(n), rate)
		return true
	}
	wait := time.Duration((min(float64(n), burst) - tokens) / rate * float64(time.Second))
	resp := []byte(`{"reason":"rate_limited","limit":"bytes","retry_after_ms":`)
	resp = strconv.AppendInt(resp, max(1, wait.Milliseconds()), 10)
	s.reply(f.JoinRef, f.Ref, f.Topic, false, append(resp, '}'))
	return false
}

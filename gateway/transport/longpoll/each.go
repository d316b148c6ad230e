package longpoll

import "github.com/fabric-rt/fabric/gateway/transport"

// Each calls fn with the session of every live LongPoll session (a
// snapshot; see ws.Server.Each). fn runs without any lock held.
func (s *Server) Each(fn func(transport.Session)) {
	s.mu.Lock()
	all := make([]*lpSession, 0, len(s.sessions))
	for _, c := range s.sessions {
		all = append(all, c)
	}
	s.mu.Unlock()
	// Lock order is session, then server: look inside each one only now.
	for _, c := range all {
		c.mu.Lock()
		sess := c.sess
		if c.ended {
			sess = nil
		}
		c.mu.Unlock()
		if sess != nil {
			fn(sess)
		}
	}
}

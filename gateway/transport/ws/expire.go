package ws

import (
	"sync"

	"github.com/fabric-rt/fabric/gateway/transport"
)

// expiryReasons keeps ExpireAt's close reason per close code for the whole
// server (transport.Expirer: one reason per code), so a connection keeps
// only the code: every authenticated connection has an expiry, and a
// string in conn cost each of them 16 bytes.
type expiryReasons struct {
	mu      sync.Mutex
	reasons map[transport.CloseCode]string
}

func (e *expiryReasons) set(code transport.CloseCode, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.reasons == nil {
		e.reasons = make(map[transport.CloseCode]string)
	}
	e.reasons[code] = reason
}

func (e *expiryReasons) reason(code transport.CloseCode) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reasons[code]
}

package app

import (
	"context"
	"time"

	"github.com/fabric-rt/fabric/gateway/namespace"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/natslink"
	"github.com/fabric-rt/fabric/nats/wire"
)

// startBroker is Start's broker phase: the NATS adapter with the stream
// settings of the persistent namespaces (their streams created or
// reconciled), the link monitor it consults and watches, and the
// revocation list the gateway's connections are checked against.
func (a *App) startBroker(nss *namespace.Set) (err error) {
	cfg := a.cfg
	sts := streams(nss)
	a.broker, err = natsbroker.New(a.nc, natsbroker.Config{Prefix: cfg.SubjectPrefix, Logger: a.log, Streams: sts,
		PresenceTTL: presenceTTLs(nss), Domain: cfg.HistoryDomain})
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err = a.broker.EnsureStreams(sctx)
	cancel()
	if err != nil {
		return err
	}
	var streamNames []string
	for name := range sts {
		streamNames = append(streamNames, wire.StreamName(name))
	}
	link, err := natslink.New(natslink.Config{
		Conn: a.nc, Interval: cfg.NATSProbeInterval, Timeout: cfg.NATSProbeTimeout,
		Streams: streamNames, Domain: cfg.HistoryDomain, Logger: a.log,
	})
	if err != nil {
		return err
	}
	a.link.Store(link)
	// The broker watches the link itself: it catches its channels up when
	// the link or a stream comes back (and after nats.go reconnects).
	a.broker.SetLink(link)
	return a.openRevocations()
}

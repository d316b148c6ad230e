package app

import (
	"context"
	"time"

	"github.com/fabric-rt/fabric/gateway"
	"github.com/fabric-rt/fabric/gateway/control"
	"github.com/fabric-rt/fabric/nats/natsctl"
)

// controlPlane is this process's part in cluster-wide control: the
// revocation list (the gateway's Gate), the responder answering for this
// gateway, and the Cluster a server API calls (docs/cluster-control.md).
type controlPlane struct {
	rev       *natsctl.Revocations
	responder *natsctl.Responder
	cluster   *natsctl.Cluster
}

// openRevocations reads the revocation list before the gateway starts, so
// that no upgrade is ever admitted against an unread list.
func (a *App) openRevocations() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rev, err := natsctl.OpenRevocations(ctx, natsctl.RevocationsConfig{Conn: a.nc, Prefix: a.cfg.SubjectPrefix, Logger: a.log})
	if err != nil {
		return err
	}
	a.ctl = &controlPlane{rev: rev}
	return nil
}

// gate is the gateway's Gate: the revocation list when tokens are
// verified (anonymous connections carry nothing to revoke).
func (a *App) gate(authenticated bool) gateway.Gate {
	if !authenticated || a.ctl == nil {
		return nil
	}
	return a.ctl.rev
}

// startControl answers control requests for the gateway and builds the
// Cluster.
func (a *App) startControl() error {
	gw := a.gw
	a.ctl.rev.SetOnChange(func() {
		if n := gw.CloseRefused(); n > 0 {
			a.log.Info("closed connections of revoked tokens or banned users", "count", n)
		}
	})
	r, err := natsctl.StartResponder(natsctl.ResponderConfig{Conn: a.nc, Prefix: a.cfg.SubjectPrefix, ID: gw.ID(),
		Version: a.buildVersion(), Local: gw, Revocations: a.ctl.rev, Logger: a.log})
	if err != nil {
		return err
	}
	a.ctl.responder = r
	c, err := natsctl.NewCluster(natsctl.ClusterConfig{Conn: a.nc, Prefix: a.cfg.SubjectPrefix, Revocations: a.ctl.rev, Logger: a.log})
	if err != nil {
		return err
	}
	a.ctl.cluster = c
	return nil
}

// stopControl says goodbye (this gateway is then not reported Missing)
// and stops watching the list.
func (a *App) stopControl() {
	if a.ctl == nil {
		return
	}
	if a.ctl.responder != nil {
		a.ctl.responder.Close()
	}
	if a.ctl.cluster != nil {
		a.ctl.cluster.Close()
	}
	a.ctl.rev.Close()
}

// Cluster is the fleet of gateways sharing this process's NATS, for a
// server API (control.Cluster: presence, channels, disconnect, revoke…).
func (a *App) Cluster() control.Cluster {
	if a.ctl == nil || a.ctl.cluster == nil {
		return nil
	}
	return a.ctl.cluster
}

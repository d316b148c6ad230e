package app

import (
	"github.com/fabric-rt/fabric/gateway"
	"github.com/fabric-rt/fabric/gateway/transport"
	"github.com/fabric-rt/fabric/gateway/transport/longpoll"
	"github.com/fabric-rt/fabric/gateway/transport/ws"
)

// startGateway is Start's gateway phase: the gateway on the broker, with
// the namespace policy, the flags' limits and the token verifier; then the
// cluster control plane that acts on it.
func (a *App) startGateway(p plan) (err error) {
	cfg := a.cfg
	a.output = transport.NewOutputBudget(cfg.MaxOutputBytes)
	a.gw, err = gateway.New(gateway.Config{
		Broker:     a.broker,
		Namespaces: p.nss,
		WS: ws.Config{
			MaxMessageSize:   cfg.MaxMessageSize,
			IdleTimeout:      cfg.IdleTimeout,
			WriteTimeout:     cfg.WriteTimeout,
			MaxQueueBytes:    cfg.MaxQueueBytes,
			Budget:           a.output,
			SendBuffer:       cfg.SendBuffer,
			HandshakeTimeout: cfg.HandshakeTimeout,
			Compression:      cfg.Compression,
			CompressMin:      cfg.CompressionThreshold,
		},
		LongPoll: longpoll.Config{Secret: []byte(cfg.LongPollSecret), PollWindow: cfg.LongPollWindow, IdleTimeout: cfg.LongPollIdleTimeout,
			Gzip: cfg.Compression, GzipMin: cfg.CompressionThreshold, Budget: a.output},
		Auth: gateway.AuthConfig{
			Verifier:        p.verifier,
			AllowQueryToken: cfg.AllowQueryToken,
			Grants:          cfg.Grants,
			Leeway:          cfg.JWTLeeway,
			Gate:            a.gate(p.verifier != nil),
		},
		Compression:    a.compressions(p.nss),
		AllowedOrigins: cfg.AllowedOrigins,
		Limits: gateway.Limits{
			MaxConnections:        cfg.MaxConnections,
			MaxConnectionsPerIP:   cfg.MaxConnectionsPerIP,
			MaxPendingHandshakes:  cfg.MaxPendingHandshakes,
			AcceptRate:            cfg.MaxAcceptRate,
			AcceptBurst:           acceptBurst(cfg.MaxAcceptRate, cfg.MaxAcceptBurst),
			JoinRate:              cfg.JoinRate,
			JoinBurst:             int(max(1, 2*cfg.JoinRate)),
			PushRate:              cfg.PushRate,
			PushBurst:             int(max(1, 2*cfg.PushRate)),
			PushBytesRate:         cfg.PushBytesRate,
			PushBytesBurst:        max(int(4*cfg.PushBytesRate), cfg.MaxMessageSize),
			AuthFailureRate:       cfg.AuthFailureRate,
			AuthFailureBurst:      int(max(1, 2*cfg.AuthFailureRate)),
			MaxConnectionsPerUser: cfg.MaxConnectionsPerUser,
			MaxLongPollPerUser:    cfg.MaxLongPollPerUser,
			MaxChannelsPerUser:    cfg.MaxChannelsPerUser,
		},
		Hooks:       hooksConfig(cfg, p.nss),
		RingBudget:  cfg.HistoryMemory,
		RingBytes:   cfg.HistoryMemoryPerChannel,
		MaxChannels: cfg.MaxChannels,
		LeaveGrace:  cfg.LeaveGrace,
		Home:        cfg.Home,
		Logger:      a.log,
	})
	if err != nil {
		return err
	}
	if err := a.startControl(); err != nil {
		return err
	}
	return nil
}

// acceptBurst is the accept bucket's size: MaxAcceptBurst, or the rate's
// one second (at least 1) when unset.
func acceptBurst(rate float64, burst int) int {
	if burst > 0 {
		return burst
	}
	return int(max(1, rate))
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/config"
	"github.com/fabric-rt/fabric/nats/natsbroker"
	"github.com/fabric-rt/fabric/nats/subject"
	"github.com/fabric-rt/fabric/nats/wire"
)

const channelUsage = `Usage: fabric channel clear [flags] TOPIC
       fabric channel rm [flags] TOPIC OFFSET

Moderates a persistent channel's history, directly over NATS:
  clear  removes every stored message of TOPIC: clients resuming across it
         get recovered:false with history_cleared, and no gateway serves
         the messages again (each resets the channel within a second)
  rm     removes the message at OFFSET from TOPIC's history: it is never
         delivered again (replay, the gateways' memory, live)

The bytes are removed from the stream too when the namespace has
allow_purge (clear) or allow_delete (rm); otherwise they stay on disk,
never served, until retention drops them (docs/history.md).

  fabric channel clear room:lobby
  fabric channel rm --nats-url nats://nats:4222 --nats-creds ops.creds room:lobby 1042

Flags (each also FABRIC_<NAME>, e.g. FABRIC_NATS_URL):
`

type channelOptions struct {
	nats    app.Config // NATSURL and the credential and TLS settings only
	prefix  string
	timeout time.Duration
}

func channelFlags(o *channelOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("fabric channel", flag.ContinueOnError)
	c := &o.nats
	fs.StringVar(&c.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server(s) of the gateways (comma-separated URLs)")
	fs.StringVar(&c.NATSCreds, "nats-creds", "", "NATS credentials file (user JWT and NKey seed, from nsc)")
	fs.StringVar(&c.NATSNkey, "nats-nkey", "", "NATS NKey seed file (SU…)")
	fs.StringVar(&c.NATSUser, "nats-user", "", "NATS user name (with --nats-password)")
	fs.StringVar(&c.NATSPassword, "nats-password", "", "password for --nats-user (prefer FABRIC_NATS_PASSWORD)")
	fs.StringVar(&c.NATSToken, "nats-token", "", "NATS authentication token (prefer FABRIC_NATS_TOKEN)")
	fs.StringVar(&c.NATSTLSCA, "nats-tls-ca", "", "PEM file of CA certificates to verify the servers with (implies TLS)")
	fs.StringVar(&c.NATSTLSCert, "nats-tls-cert", "", "PEM client certificate file for mutual TLS (with --nats-tls-key)")
	fs.StringVar(&c.NATSTLSKey, "nats-tls-key", "", "PEM private key file of --nats-tls-cert")
	fs.StringVar(&o.prefix, "subject-prefix", wire.DefaultPrefix, "NATS subject prefix of the gateways")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "give up (and fail) after this long")
	return fs
}

// channelCmd implements `fabric channel`.
func channelCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) error {
	var o channelOptions
	fs := channelFlags(&o)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), channelUsage)
		fs.PrintDefaults()
	}
	if len(args) == 0 || (args[0] != "clear" && args[0] != "rm") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fs.Usage()
			return flag.ErrHelp
		}
		fs.Usage()
		return errors.New("channel: want clear or rm")
	}
	op := args[0]
	rest, err := config.Load(fs, args[1:], config.Options{EnvPrefix: "FABRIC_", Environ: environ})
	if err != nil {
		return err
	}
	want := 1
	if op == "rm" {
		want = 2
	}
	if len(rest) != want {
		fs.Usage()
		if op == "rm" {
			return errors.New("channel rm: want TOPIC and OFFSET")
		}
		return errors.New("channel clear: want TOPIC")
	}
	topic := rest[0]
	if err := subject.ValidPrefix(o.prefix); err != nil {
		return fmt.Errorf("channel: --subject-prefix: %w", err)
	}
	if _, err := subject.Map(o.prefix, topic); err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	var offset uint64
	if op == "rm" {
		offset, err = strconv.ParseUint(rest[1], 10, 64)
		if err != nil || offset == 0 {
			return fmt.Errorf("channel rm: OFFSET must be a positive decimal integer, got %q", rest[1])
		}
	}
	if o.timeout <= 0 {
		return errors.New("channel: --timeout must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	nc, err := app.DialNATS(o.nats, "fabric channel", o.timeout)
	if err != nil {
		return fmt.Errorf("channel: %w", err)
	}
	defer nc.Close()
	m, err := natsbroker.NewModerator(nc, o.prefix)
	if err != nil {
		return err
	}
	start := time.Now()
	if op == "clear" {
		if err := m.ClearChannel(ctx, topic); err != nil {
			return fmt.Errorf("channel clear %s: %w", topic, err)
		}
		fmt.Fprintf(stdout, "cleared %s (%v)\n", topic, time.Since(start).Round(time.Millisecond))
		return nil
	}
	if err := m.RemoveMessage(ctx, topic, offset); err != nil {
		return fmt.Errorf("channel rm %s %d: %w", topic, offset, err)
	}
	fmt.Fprintf(stdout, "removed %s offset %d (%v)\n", topic, offset, time.Since(start).Round(time.Millisecond))
	return nil
}

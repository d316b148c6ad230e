package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"github.com/fabric-rt/fabric/internal/app"
	"github.com/fabric-rt/fabric/internal/config"
	"github.com/fabric-rt/fabric/nats/subject"
	"github.com/fabric-rt/fabric/nats/wire"
	"github.com/fabric-rt/fabric/publisher"
)

const publishUsage = `Usage: fabric publish [flags] TOPIC [PAYLOAD]

Publishes PAYLOAD (or the content of --file, or stdin with "-" or --file -)
as one message to the Fabric channel TOPIC, directly to NATS (default) or
through the HTTP API (--api-url). Prints "offset=N epoch=E" once a
persistent namespace stored it, or "published (ephemeral)".

  fabric publish --event new_msg room:lobby '{"body":"hi"}'
  fabric publish --api-url http://127.0.0.1:4000 --api-key KEY room:lobby - < msg.json

Flags (each also FABRIC_<NAME>, e.g. FABRIC_API_KEY):
`

// maxPayloadRead bounds what is read from a file or stdin; the server's
// limit (1 MiB by default) is far below it and gives the real error.
const maxPayloadRead = 64 << 20

type publishOptions struct {
	natsURL, apiURL, apiKey         string
	event, file, contentType, idKey string
	prefix                          string
	protobuf                        bool
	timeout                         time.Duration
}

func publishFlags(o *publishOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("fabric publish", flag.ContinueOnError)
	fs.StringVar(&o.natsURL, "nats-url", "nats://127.0.0.1:4222", "NATS server(s) to publish to (comma-separated URLs)")
	fs.StringVar(&o.apiURL, "api-url", "", "publish through Fabric's HTTP API at this base URL (e.g. http://127.0.0.1:4000) instead of NATS")
	fs.StringVar(&o.apiKey, "api-key", "", "API key for --api-url, sent as Authorization: Bearer")
	fs.StringVar(&o.event, "event", wire.DefaultEvent, "event name clients bind with channel.on")
	fs.StringVar(&o.file, "file", "", `read the payload from this file ("-": stdin)`)
	fs.StringVar(&o.contentType, "content-type", "", "Content-Type of the payload (a non-JSON type makes clients get a binary frame)")
	fs.StringVar(&o.idKey, "idempotency-key", "", "key that makes a retry within 2 minutes a no-op (persistent namespaces)")
	fs.StringVar(&o.prefix, "subject-prefix", wire.DefaultPrefix, "NATS subject prefix of the gateway (NATS mode)")
	fs.BoolVar(&o.protobuf, "protobuf", false, "send the HTTP request as protobuf instead of JSON (--api-url mode)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "give up (and fail) after this long")
	return fs
}

// publish implements `fabric publish`.
func publish(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var o publishOptions
	fs := publishFlags(&o)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), publishUsage)
		fs.PrintDefaults()
	}
	rest, err := config.Load(fs, args, config.Options{EnvPrefix: "FABRIC_", Environ: environ})
	if err != nil {
		return err
	}
	if len(rest) < 1 || len(rest) > 2 {
		fs.Usage()
		return errors.New("publish: want TOPIC and at most one PAYLOAD argument")
	}
	topic := rest[0]
	payload, err := readPayload(o.file, rest[1:], stdin)
	if err != nil {
		return err
	}
	src := config.Sources(fs)
	if o.apiURL != "" && src["nats-url"] == config.SourceFlag {
		return errors.New("publish: give --nats-url or --api-url, not both")
	}
	if o.protobuf && o.apiURL == "" {
		return errors.New("publish: --protobuf applies to --api-url only")
	}
	if o.timeout <= 0 {
		return errors.New("publish: --timeout must be positive")
	}
	// Refuse what the gateway would refuse before connecting anywhere.
	if err := subject.ValidPrefix(o.prefix); err != nil {
		return fmt.Errorf("publish: --subject-prefix: %w", err)
	}
	if _, err := subject.Map(o.prefix, topic); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	if o.event == "" {
		o.event = wire.DefaultEvent
	}
	if !publisher.ValidEvent(o.event) {
		return fmt.Errorf("publish: %w: %q", publisher.ErrInvalidEvent, o.event)
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	var res publisher.Result
	if o.apiURL != "" {
		res, err = publishHTTP(ctx, &o, topic, payload)
	} else {
		res, err = publishNATS(ctx, &o, topic, payload)
	}
	if err != nil {
		return err
	}
	switch {
	case res.Epoch == "" && res.Offset == 0:
		fmt.Fprintln(stdout, "published (ephemeral)")
	case res.Duplicate:
		fmt.Fprintf(stdout, "offset=%d epoch=%s duplicate=true\n", res.Offset, res.Epoch)
	default:
		fmt.Fprintf(stdout, "offset=%d epoch=%s\n", res.Offset, res.Epoch)
	}
	return nil
}

// readPayload takes the payload from exactly one of: the PAYLOAD argument
// ("-" is stdin), --file (path, "-" is stdin), or nothing (empty).
func readPayload(file string, arg []string, stdin io.Reader) ([]byte, error) {
	if file != "" && len(arg) > 0 {
		return nil, errors.New("publish: give PAYLOAD or --file, not both")
	}
	var r io.Reader
	switch {
	case len(arg) > 0 && arg[0] != "-":
		return []byte(arg[0]), nil
	case len(arg) > 0 || file == "-":
		r = stdin
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		defer f.Close()
		r = f
	default:
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r, maxPayloadRead+1))
	if err != nil {
		return nil, fmt.Errorf("publish: reading the payload: %w", err)
	}
	if len(b) > maxPayloadRead {
		return nil, fmt.Errorf("publish: payload over %d bytes", maxPayloadRead)
	}
	return b, nil
}

func publishNATS(ctx context.Context, o *publishOptions, topic string, payload []byte) (publisher.Result, error) {
	connectTimeout := o.timeout
	if d, ok := ctx.Deadline(); ok {
		connectTimeout = time.Until(d)
	}
	nc, err := app.DialNATS(app.Config{NATSURL: o.natsURL}, "fabric publish", connectTimeout)
	if err != nil {
		return publisher.Result{}, fmt.Errorf("publish: %w", err)
	}
	defer nc.Close()
	d, _ := ctx.Deadline()
	p, err := publisher.New(nc, publisher.Config{Prefix: o.prefix, Timeout: time.Until(d)})
	if err != nil {
		return publisher.Result{}, err
	}
	defer p.Close()
	return p.Publish(ctx, topic, o.event, payload, o.options()...)
}

func publishHTTP(ctx context.Context, o *publishOptions, topic string, payload []byte) (publisher.Result, error) {
	u, err := url.Parse(o.apiURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return publisher.Result{}, errors.New("publish: --api-url must be an http:// or https:// URL")
	}
	c := &publisher.HTTPClient{BaseURL: o.apiURL, APIKey: o.apiKey, Protobuf: o.protobuf}
	res, err := c.Publish(ctx, topic, o.event, payload, o.options()...)
	if err != nil {
		return publisher.Result{}, fmt.Errorf("publish: %w", err)
	}
	return res, nil
}

// options are the message's --content-type and --idempotency-key.
func (o *publishOptions) options() []publisher.Option {
	var opts []publisher.Option
	if o.contentType != "" {
		opts = append(opts, publisher.WithContentType(o.contentType))
	}
	if o.idKey != "" {
		opts = append(opts, publisher.WithIdempotencyKey(o.idKey))
	}
	return opts
}

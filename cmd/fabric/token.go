package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/fabric-rt/fabric/auth"
	"github.com/fabric-rt/fabric/internal/config"
)

// token implements `fabric token`: mint a development JWT with the same key
// settings as `fabric serve` (flags, or FABRIC_JWT_SECRET & co. in the
// environment; other FABRIC_ variables are ignored here, since they belong
// to serve).
func token(args, environ []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fabric token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		mc                      auth.MintClaims
		secret, privFile        string
		issuer, audience        string
		channels, publish, kind string
	)
	fs.StringVar(&mc.Subject, "sub", "dev", "user id (sub claim)")
	fs.StringVar(&channels, "channels", "", "comma-separated topic patterns the holder may join (room:*, game:42:>)")
	fs.StringVar(&publish, "publish", "", "comma-separated topic patterns the holder may push or publish to")
	fs.StringVar(&mc.Channel, "channel", "", "one topic, for a per-join token (use with --typ join)")
	fs.StringVar(&kind, "typ", "", `token type: "" (connection), "join" or "publisher"`)
	fs.DurationVar(&mc.TTL, "ttl", time.Hour, "lifetime")
	fs.StringVar(&mc.Kid, "kid", "", "key id header (for a key published in a JWKS)")
	fs.StringVar(&secret, "jwt-secret", "", "HS256 key (as for serve; also FABRIC_JWT_SECRET)")
	fs.StringVar(&privFile, "jwt-private-key", "", "PEM private key file (RS256, ES256 or EdDSA)")
	fs.StringVar(&issuer, "jwt-issuer", "", "iss claim (also FABRIC_JWT_ISSUER)")
	fs.StringVar(&audience, "jwt-audience", "", "aud claim (also FABRIC_JWT_AUDIENCE)")
	if err := config.ParseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token: unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		for _, name := range []string{"jwt-secret", "jwt-issuer", "jwt-audience"} {
			if k == config.EnvName("FABRIC_", name) && !set[name] {
				_ = fs.Set(name, v) // string flags accept any value
			}
		}
	}
	mc.Type = kind
	if kind == "" && strings.TrimSpace(mc.Subject) == "" {
		// The gateway refuses a connection token without a user
		// (missing_sub): budgets and presence are per user.
		return errors.New(`token: a connection token needs a user: give --sub (--sub "" is refused)`)
	}
	mc.Channels, mc.Publish = splitList(channels), splitList(publish)
	if privFile != "" {
		pem, err := os.ReadFile(privFile)
		if err != nil {
			return err
		}
		mc.PrivateKeyPEM = pem
	} else if secret == "" {
		return errors.New("token: give --jwt-secret (or FABRIC_JWT_SECRET) or --jwt-private-key")
	}
	tok, err := auth.Mint(auth.Config{Secret: []byte(secret), Issuer: issuer, Audience: audience}, mc)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

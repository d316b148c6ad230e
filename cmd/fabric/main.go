// Command fabric is the one Fabric binary: `fabric serve` runs a gateway
// (with an embedded NATS server unless --nats-url is given), `fabric
// version` prints the build. Each subcommand owns a flag.FlagSet; there is no
// CLI framework.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `fabric — a real-time event fabric speaking Phoenix Channels over NATS

Usage:
  fabric serve [flags]     run a gateway (embedded NATS unless --nats-url)
  fabric publish [flags] TOPIC [PAYLOAD]
                           publish a message (to NATS or the HTTP API)
  fabric token [flags]     mint a development JWT
  fabric bench idle [flags]
                           measure server RSS per idle connection vs nats-server
  fabric nats [flags]      run a standalone NATS/JetStream node (cluster member)
  fabric version           print the version

Run "fabric serve -h" for its flags. Every flag can also be set as
FABRIC_<NAME> (e.g. FABRIC_NATS_URL) or as a key in a YAML file given with
--config; flags win over the environment, which wins over the file.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		err = serve(ctx, args[1:], os.Environ(), stdout, stderr)
	case "publish":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		err = publish(ctx, args[1:], os.Environ(), os.Stdin, stdout, stderr)
	case "nats":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		err = natsCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		err = bench(args[1:], os.Environ(), stdout, stderr)
	case "token":
		err = token(args[1:], os.Environ(), stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "fabric: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	default:
		fmt.Fprintln(stderr, "fabric:", err)
		return 1
	}
}

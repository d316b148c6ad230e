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
	"strings"
	"syscall"

	"github.com/fabric-rt/fabric/internal/config"
)

const usage = `fabric — a real-time event fabric speaking Phoenix Channels over NATS

Usage: fabric COMMAND [flags]

  serve           run a gateway (embedded NATS unless --nats-url)
  publish         publish a message to a channel, through NATS or the HTTP API
  channel         clear a channel's history or remove one message (moderation)
  token           mint a development JWT
  presence        who is in a channel, cluster-wide (--stats: counts only)
  history         a channel's stored messages (--last N, or --since OFFSET)
  channels        active channels matching a pattern, with member counts
  kick            disconnect a user everywhere (--ban 10m keeps it out)
  revoke          revoke tokens (--jti J, or --user U --before T)
  info            the live gateways and their NATS
  nats            run a standalone NATS/JetStream node (cluster member)
  bench idle      server RSS per idle joined connection, Fabric vs nats-server
  bench fanout    one channel, N subscribers: deliveries/s, latency, CPU
  bench storm     N clients connect and join at once
  bench plot      plot memory/conn and deliveries/s against N
  version         print the version

Run "fabric COMMAND -h" for its flags. Every flag can also be set as
FABRIC_<NAME> (e.g. FABRIC_NATS_URL) or, for serve, as a key in a YAML file
given with --config; flags win over the environment, which wins over the file.
`

// commands are the first words run accepts, for suggestions.
var commands = []string{"serve", "publish", "channel", "nats", "bench", "token", "version", "help",
	"presence", "history", "channels", "kick", "revoke", "info"}

// synopsis is the usage line printed under a command-line mistake, for the
// commands whose arguments are more than flags.
var synopsis = map[string]string{
	"fabric publish": "fabric publish [flags] TOPIC [PAYLOAD]",
	"fabric channel": "fabric channel clear|rm [flags] TOPIC [OFFSET]",
}

// shortUsage follows a command-line mistake: the mistake in one line, the
// command's usage line and where the flag list is, rather than the list.
func shortUsage(w io.Writer, ue *config.UsageError) {
	line, ok := synopsis[ue.Command]
	if l, api := apiCommands[strings.TrimPrefix(ue.Command, "fabric ")]; api {
		line, ok = l, true
	}
	if !ok {
		line = ue.Command + " [flags]"
	}
	fmt.Fprintf(w, "%s: %s\nUsage: %s\nRun \"%s -h\" for the list of flags.\n", ue.Command, ue.Msg, line, ue.Command)
}

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
	case "channel":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		err = channelCmd(ctx, args[1:], os.Environ(), stdout, stderr)
	case "nats":
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		err = natsCmd(ctx, args[1:], stdout, stderr)
	case "presence", "history", "channels", "kick", "revoke", "info": // the server API (api.go)
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		err = apiCmd(ctx, args[0], args[1:], os.Environ(), stdout, stderr)
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
		msg := fmt.Sprintf("unknown command %q", args[0])
		if c := config.Suggest(args[0], commands); c != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", c)
		}
		fmt.Fprintf(stderr, "fabric: %s\n\n%s", msg, usage)
		return 2
	}
	var ue *config.UsageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		shortUsage(stderr, ue)
		return 2
	default:
		fmt.Fprintln(stderr, "fabric:", err)
		return 1
	}
}

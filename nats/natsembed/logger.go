package natsembed

import (
	"context"
	"fmt"
	"log/slog"
)

// levelTrace sits below slog.LevelDebug: nats-server's trace output is
// per-protocol-message and must be switchable separately from debug.
const levelTrace = slog.LevelDebug - 4

// logger adapts nats-server's printf-style server.Logger to slog.
type logger struct {
	l     *slog.Logger
	fatal chan string // first fatal message, for Start
}

func (lg *logger) log(level slog.Level, format string, v []any) {
	ctx := context.Background()
	// Formatting is the expensive part with trace on; skip it when the
	// handler would drop the record anyway.
	if !lg.l.Enabled(ctx, level) {
		return
	}
	lg.l.Log(ctx, level, fmt.Sprintf(format, v...), slog.String("component", "nats-server"))
}

func (lg *logger) Noticef(format string, v ...any) { lg.log(slog.LevelInfo, format, v) }
func (lg *logger) Warnf(format string, v ...any)   { lg.log(slog.LevelWarn, format, v) }
func (lg *logger) Errorf(format string, v ...any)  { lg.log(slog.LevelError, format, v) }
func (lg *logger) Debugf(format string, v ...any)  { lg.log(slog.LevelDebug, format, v) }
func (lg *logger) Tracef(format string, v ...any)  { lg.log(levelTrace, format, v) }

// Fatalf logs at error level and does NOT exit: nats-server's own logger
// calls os.Exit here, which would take the whole gateway down (without
// draining clients) for errors Start can report as an error instead. The
// server returns from the failing routine after calling Fatalf.
func (lg *logger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	lg.l.Error(msg, slog.String("component", "nats-server"), slog.Bool("fatal", true))
	select {
	case lg.fatal <- msg:
	default:
	}
}

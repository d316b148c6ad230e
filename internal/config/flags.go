package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// UsageError is a command-line mistake (unknown flag, bad value, missing
// argument). Its message is one line, with a suggestion when an unknown flag
// is close to a known one; printing the full flag list is left to -h, since
// a hundred lines of defaults bury the one line that says what is wrong.
type UsageError struct {
	Command string // the FlagSet's name, e.g. "fabric serve"
	Msg     string
}

func (e *UsageError) Error() string { return e.Msg }

// ParseFlags parses args into fs like fs.Parse, without the flag package's
// habit of printing the whole usage on every mistake: -h and --help print
// it (fs.Usage, or the flag package's default) and return flag.ErrHelp;
// any other error is returned as a *UsageError and nothing is printed.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		if usage != nil {
			usage()
		} else {
			fmt.Fprintf(out, "Usage of %s:\n", fs.Name())
			fs.PrintDefaults()
		}
		return flag.ErrHelp
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		msg = "unknown flag --" + name
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		if c := closest(name, names); c != "" {
			msg += " (did you mean --" + c + "?)"
		}
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		msg = "flag --" + name + " needs a value"
	}
	return &UsageError{Command: fs.Name(), Msg: msg}
}

// Suggest returns the candidate closest to word (a mistyped command, say),
// or "" when none is close enough to be what was meant.
func Suggest(word string, candidates []string) string { return closest(word, candidates) }

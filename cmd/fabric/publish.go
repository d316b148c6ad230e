package main

import (
	"context"
	"errors"
	"io"
)

// publish implements `fabric publish` (see publisher/).
func publish(ctx context.Context, args, environ []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return errors.New("publish: not implemented yet")
}

package main

import (
	"errors"
	"io"
)

// token implements `fabric token`.
func token(args, environ []string, stdout, stderr io.Writer) error {
	return errors.New("token: not implemented yet")
}

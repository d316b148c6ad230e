package main

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed web
var web embed.FS

// homePage serves the demo page embedded in the binary, so `go run
// ./cmd/fabric serve` needs no other file.
func homePage() http.Handler {
	sub, err := fs.Sub(web, "web")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return http.FileServerFS(sub)
}

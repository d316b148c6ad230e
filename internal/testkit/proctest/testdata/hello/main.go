// Command hello is the small main package proctest's tests build.
package main

import "fmt"

func main() { fmt.Println("hello from a built binary") }

// Command hello is kobuild's example app: it prints a greeting from its kodata directory,
// which ko-style images ship at $KO_DATA_PATH.
package main

import (
	"fmt"
	"os"
	"path/filepath"
)

var version = "dev"

func main() {
	greeting := "hello from kobuild"
	if dir := os.Getenv("KO_DATA_PATH"); dir != "" {
		if b, err := os.ReadFile(filepath.Join(dir, "greeting.txt")); err == nil {
			greeting = string(b)
		}
	}
	fmt.Printf("%s (version %s)\n", greeting, version)
}

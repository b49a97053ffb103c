// Command hivectl is the operator's tool: validate and push site files,
// query status, history and members, roll back, manage secrets and TLS.
package main

import (
	"os"

	"github.com/hivefleet/hive/ctl"
)

func main() {
	os.Exit(ctl.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

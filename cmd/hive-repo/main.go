// Command hive-repo serves the site's YUM and APT repositories; see package repocli.
package main

import (
	"os"

	"github.com/hivefleet/hive/repo/repocli"
)

func main() { os.Exit(repocli.Main(os.Args[1:], os.Stdout, os.Stderr)) }

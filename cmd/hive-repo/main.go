// Command hive-repo is not built yet: it lands with issue 7.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "hive-repo: not implemented yet (tracked in issue 7)")
	os.Exit(2)
}

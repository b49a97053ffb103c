// Command hive-agent is not built yet: it lands with issue 4.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "hive-agent: not implemented yet (tracked in issue 4)")
	os.Exit(2)
}

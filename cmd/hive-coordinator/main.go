// Command hive-coordinator is not built yet: it lands with issue 3.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "hive-coordinator: not implemented yet (tracked in issue 3)")
	os.Exit(2)
}

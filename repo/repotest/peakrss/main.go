// Command peakrss runs a command and writes its wall time, CPU time and
// peak RSS to a file, for benchmarks that compare programs as a user runs
// them:
//
//	peakrss OUTFILE COMMAND [ARG...]
//
// OUTFILE receives one line: "wall_ns user_ns sys_ns maxrss_kib". The
// command's standard streams are peakrss's; its exit status is peakrss's.
//
// Why a separate small program: Go starts children with
// clone(CLONE_VM|CLONE_VFORK), and Linux records the peak RSS of the memory
// the child shared until exec (the parent's, e.g. a test binary's hundreds
// of MB) into the child's ru_maxrss. Started from this small program, the
// figure recorded at exec is peakrss's own few MB, below any program
// measured, so the child's ru_maxrss is its own peak.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: peakrss OUTFILE COMMAND [ARG...]")
		os.Exit(2)
	}
	cmd := exec.Command(os.Args[2], os.Args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		fmt.Fprintf(os.Stderr, "peakrss: %v\n", err)
		os.Exit(127)
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if ru == nil {
		fmt.Fprintln(os.Stderr, "peakrss: no resource usage")
		os.Exit(127)
	}
	line := fmt.Sprintf("%d %d %d %d\n", wall.Nanoseconds(), ru.Utime.Nano(), ru.Stime.Nano(), ru.Maxrss)
	if err := os.WriteFile(os.Args[1], []byte(line), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "peakrss: %v\n", err)
		os.Exit(127)
	}
	os.Exit(cmd.ProcessState.ExitCode())
}

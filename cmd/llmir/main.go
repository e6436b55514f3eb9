// Command llmir is the command-line front end of the llmir compiler: it
// imports models, runs passes, lists tuning tasks, and drives the tuner,
// the tuning database and the benchmarks. Every subcommand is thin: it
// parses flags, calls a package, and prints.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	setMemoryLimit()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd := newRootCmd()
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "llmir:", err)
		// Some outcomes have their own status (a regression report exits 3).
		var ec interface{ ExitCode() int }
		if errors.As(err, &ec) {
			os.Exit(ec.ExitCode())
		}
		os.Exit(1)
	}
}

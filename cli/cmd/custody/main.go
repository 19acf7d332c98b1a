// Command custody is Custody's command line: the dev stack, publishing,
// admission, distribution and offline verification.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/custody-dev/custody/cli/internal/command"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := command.Execute(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

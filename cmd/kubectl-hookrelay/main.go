// Command kubectl-hookrelay is the kubectl plugin of Hookrelay: publish a
// test event, read an endpoint's deliveries and an event's attempts, retry
// and replay deliveries, re-enable an endpoint and rotate its secret.
//
// In a cluster it reaches the dispatcher through the API server's service
// proxy with the user's own credentials; --server (or $HOOKRELAY_SERVER)
// points it at a dispatcher directly, as `make dev` does.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	o := &options{}
	root := &cobra.Command{
		Use:           "kubectl-hookrelay",
		Short:         "Publish test events and read, retry and replay Hookrelay deliveries",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	o.bind(root)
	root.AddCommand(
		sendCommand(o), deliveriesCommand(o), attemptsCommand(o),
		retryCommand(o), replayCommand(o), reenableCommand(o), rotateSecretCommand(o),
	)
	return root
}

// Command kubectl-hookrelay is the kubectl plugin of Hookrelay: publish a
// test event, read an endpoint's deliveries and an event's attempts, retry
// and replay deliveries, re-enable an endpoint and rotate its secret.
//
// It takes kubectl's flags (--kubeconfig, --context, -n, --as,
// --request-timeout, ...) and prints errors as kubectl does. In a cluster it
// reaches the dispatcher through the API server's service proxy with the
// user's own credentials; --dispatcher-url (or $HOOKRELAY_DISPATCHER_URL)
// points it at a dispatcher directly, as `make dev` does.
package main

import (
	"errors"
	"os"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	root := newRootCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	if err := root.Execute(); err != nil {
		cmdutil.CheckErr(kubectlError(err))
	}
}

func newRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := newOptions(streams)
	root := &cobra.Command{
		Use:   "kubectl-hookrelay",
		Short: "Publish test events and read, retry and replay Hookrelay deliveries",
		Long: `Publish test events and read, retry and replay Hookrelay deliveries.

It takes kubectl's flags and prints errors as kubectl does. In a cluster it
reaches the dispatcher through the API server's service proxy with your own
credentials: the ClusterRoles hookrelay-viewer (reads) and hookrelay-operator
(retry, replay) grant services/proxy on the hookrelay-dispatcher Service, so
bind them in hookrelay-system as well as in your namespace. The API server
connects to the Service's https port without verifying the dispatcher's
certificate. --dispatcher-url reaches a dispatcher directly, as under make
dev; an https:// one is verified against --dispatcher-ca-file, or, for the
Service's in-cluster name, the CA in the ConfigMap hookrelay-dispatcher-ca.

Each request gives up after --request-timeout; when that is 0 (kubectl's
default: no timeout), after ` + defaultRequestTimeout.String() + `.`,
		// Help and usage say "kubectl hookrelay", as the user types it.
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl hookrelay"},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	o.bind(root)
	root.AddCommand(
		sendCommand(o), deliveriesCommand(o), attemptsCommand(o),
		retryCommand(o), replayCommand(o), reenableCommand(o), rotateSecretCommand(o),
	)
	return root
}

// kubectlError is the API server's error itself when err wraps one, so that
// CheckErr prints it as kubectl does ("Error from server (NotFound): ...").
func kubectlError(err error) error {
	if status, ok := errors.AsType[*apierrors.StatusError](err); ok {
		return status
	}
	return err
}

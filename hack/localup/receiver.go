package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	hookrelayv1alpha1 "github.com/hookrelay/hookrelay/api/v1alpha1"
	"github.com/hookrelay/hookrelay/dispatcher/signing"
)

// receiver is the sample webhook receiver of `make dev`: each path is an
// endpoint in the default namespace (/palm is WebhookEndpoint palm); it
// verifies the signature families that endpoint's spec.signing selects with
// its signing secret and prints each delivery.
type receiver struct {
	client    client.Client
	namespace string
	// defaultPrefix is the dispatcher's --header-prefix, which signs
	// endpoints without spec.signing.headerPrefix.
	defaultPrefix string
	log           io.Writer
	mu            sync.Mutex
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := strings.TrimPrefix(req.URL.Path, "/")
	var verdicts []string
	eventType := "-"
	var endpoint hookrelayv1alpha1.WebhookEndpoint
	var secret corev1.Secret
	if err := r.client.Get(req.Context(), types.NamespacedName{Namespace: r.namespace, Name: name}, &endpoint); err != nil {
		verdicts = append(verdicts, "unverified (no endpoint: "+err.Error()+")")
	} else if err := r.client.Get(req.Context(), types.NamespacedName{Namespace: r.namespace, Name: endpoint.Status.SecretName}, &secret); err != nil {
		verdicts = append(verdicts, "unverified (no secret: "+err.Error()+")")
	} else {
		key := string(secret.Data["secret"])
		for _, scheme := range endpoint.Spec.EffectiveSignatureSchemes() {
			switch scheme {
			case hookrelayv1alpha1.SignatureSchemePrefixed:
				prefix := r.defaultPrefix
				if endpoint.Spec.Signing != nil && endpoint.Spec.Signing.HeaderPrefix != "" {
					prefix = endpoint.Spec.Signing.HeaderPrefix
				}
				eventType = req.Header.Get(prefix + "-Event-Type")
				verdicts = append(verdicts, prefix+"-Signature "+verdict(signing.VerifyPrefixed(req.Header, prefix, key, body, time.Now())))
			case hookrelayv1alpha1.SignatureSchemeStandardWebhooks:
				verdicts = append(verdicts, "webhook-signature "+verdict(verifyStandard(key, body, req.Header)))
			}
		}
	}
	r.mu.Lock()
	fmt.Fprintf(r.log, "receiver: %s POST /%s event=%s type=%s %s\n  %s\n",
		time.Now().Format("15:04:05"), name, req.Header.Get("webhook-id"), eventType, strings.Join(verdicts, ", "), body)
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func verdict(err error) string {
	if err != nil {
		return "FAILED (" + err.Error() + ")"
	}
	return "verified"
}

func verifyStandard(secret string, body []byte, header http.Header) error {
	verifier, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	return verifier.Verify(body, header)
}

// serveReceiver runs the receiver until ctx ends; its lines go to the log
// file and stdout. It returns the address it listens on (address may have
// port 0).
func serveReceiver(ctx context.Context, address string, c client.Client, logPath string) (stop func(), bound string, err error) {
	listener, err := net.Listen("tcp", address)
	if err != nil {
		return nil, "", fmt.Errorf("sample receiver: %w", err)
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		listener.Close()
		return nil, "", err
	}
	server := &http.Server{ReadHeaderTimeout: 5 * time.Second,
		Handler: &receiver{client: c, namespace: "default", defaultPrefix: "Hookrelay", log: io.MultiWriter(logFile, os.Stdout)}}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()
	return func() {
		shutdown, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(os.Stderr, "dev: sample receiver:", err)
		}
		logFile.Close()
	}, listener.Addr().String(), nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hookrelay/hookrelay/dispatcher/signing"
)

// receiver is the sample webhook receiver of `make dev`: each path is an
// endpoint in the default namespace (/palm is WebhookEndpoint palm); it
// verifies both signature families with the endpoint's signing secret and
// prints each delivery.
type receiver struct {
	client       client.Client
	namespace    string
	headerPrefix string
	log          io.Writer
	mu           sync.Mutex
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	endpoint := strings.TrimPrefix(req.URL.Path, "/")
	prefixed, standard := "unverified", "unverified"
	var secret corev1.Secret
	err = r.client.Get(req.Context(), types.NamespacedName{Namespace: r.namespace, Name: endpoint + "-whsec"}, &secret)
	if err == nil {
		key := string(secret.Data["secret"])
		prefixed, standard = verdict(signing.VerifyPrefixed(req.Header, r.headerPrefix, key, body, time.Now())), verdict(verifyStandard(key, body, req.Header))
	} else {
		prefixed = "no secret: " + err.Error()
	}
	r.mu.Lock()
	fmt.Fprintf(r.log, "receiver: %s POST /%s event=%s type=%s %s-Signature %s, webhook-signature %s\n  %s\n",
		time.Now().Format("15:04:05"), endpoint, req.Header.Get("webhook-id"), req.Header.Get(r.headerPrefix+"-Event-Type"),
		r.headerPrefix, prefixed, standard, body)
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

// serveReceiver runs the receiver until ctx ends; its lines go to the log file and stdout.
func serveReceiver(ctx context.Context, address string, c client.Client, logPath string) (func(), error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	server := &http.Server{Addr: address, ReadHeaderTimeout: 5 * time.Second,
		Handler: &receiver{client: c, namespace: "default", headerPrefix: "Hookrelay", log: io.MultiWriter(logFile, os.Stdout)}}
	listenErr := make(chan error, 1)
	go func() { listenErr <- server.ListenAndServe() }()
	select {
	case err := <-listenErr:
		logFile.Close()
		return nil, fmt.Errorf("sample receiver on %s: %w", address, err)
	case <-time.After(100 * time.Millisecond):
	}
	return func() {
		shutdown, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
		logFile.Close()
	}, nil
}

package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/hookrelay/hookrelay/pkg/client"
)

// dispatcherCAConfigMap is where the manager publishes the CA of the
// dispatcher's certificate (key ca.crt), readable by every authenticated
// user (config/dispatcher/ca_reader.yaml).
const dispatcherCAConfigMap = client.CAConfigMap

// trust is how the dispatcher's certificate is verified: the client
// options, and words for an error when verification fails.
type trust struct {
	options []client.Option
	says    string
}

// dispatcherTrust picks the CAs that verify the dispatcher at
// --dispatcher-url: --dispatcher-ca-file's; or, for the Service's in-cluster
// name, the published CA ConfigMap, read with the user's credentials. The
// system's CAs always count; verification is never turned off.
func (o *options) dispatcherTrust(timeout time.Duration) (trust, error) {
	if o.dispatcherCAFile != "" {
		return trust{options: []client.Option{client.WithCAFile(o.dispatcherCAFile)}, says: "--dispatcher-ca-file " + o.dispatcherCAFile}, nil
	}
	parsed, err := url.Parse(o.dispatcherURL)
	if err != nil {
		return trust{}, fmt.Errorf("--dispatcher-url %q: %w", o.dispatcherURL, err)
	}
	if parsed.Scheme != "https" || !o.isDispatcherService(parsed.Hostname()) {
		return trust{says: "the system's CAs"}, nil
	}
	bundle, err := o.publishedCA(timeout)
	if err != nil {
		// The system's CAs may still verify it (a provided certificate
		// of a public CA); if not, the error says why this did not help.
		return trust{says: "the system's CAs, as " + err.Error()}, nil
	}
	where := "ConfigMap " + o.dispatcherNamespace + "/" + dispatcherCAConfigMap
	return trust{options: []client.Option{client.WithCAPEM(bundle)}, says: "the system's CAs and the CA in " + where}, nil
}

// isDispatcherService reports whether host is the dispatcher Service's
// in-cluster DNS name, which its certificate holds.
func (o *options) isDispatcherService(host string) bool {
	service := strings.ToLower(strings.TrimSuffix(host, "."))
	name := o.dispatcherService + "." + o.dispatcherNamespace + ".svc"
	return service == name || service == name+".cluster.local"
}

// publishedCA reads the CA bundle the manager publishes.
func (o *options) publishedCA(timeout time.Duration) ([]byte, error) {
	config, err := o.kube.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("reading ConfigMap %s/%s needs a kubeconfig: %w", o.dispatcherNamespace, dispatcherCAConfigMap, err)
	}
	clientset, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	configMap, err := clientset.CoreV1().ConfigMaps(o.dispatcherNamespace).Get(ctx, dispatcherCAConfigMap, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading ConfigMap %s/%s failed: %w", o.dispatcherNamespace, dispatcherCAConfigMap, err)
	}
	bundle := configMap.Data["ca.crt"]
	if bundle == "" {
		return nil, fmt.Errorf("ConfigMap %s/%s has no ca.crt", o.dispatcherNamespace, dispatcherCAConfigMap)
	}
	return []byte(bundle), nil
}

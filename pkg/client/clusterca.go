package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// CAConfigMap is the ConfigMap, in the dispatcher's namespace, where the
// manager publishes the CA of the dispatcher's certificate (key ca.crt).
const CAConfigMap = "hookrelay-dispatcher-ca"

// caReadTimeout bounds New's read of the published CA.
const caReadTimeout = 10 * time.Second

// inCluster is where a Pod finds the API server and its ServiceAccount's
// credentials, as client-go's rest.InClusterConfig does; tests replace it.
// The client reads one ConfigMap with them, which does not justify linking
// client-go into every producer.
var inCluster = struct {
	tokenFile, caFile string
	host              func() string
}{
	tokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token",
	caFile:    "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
	host: func() string {
		host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
		if host == "" || port == "" {
			return ""
		}
		return net.JoinHostPort(host, port)
	},
}

// clusterCA returns the published CA bundle when dispatcher is an https://
// URL of a Service's in-cluster name and the client runs in a Pod; else
// nil and words on why not, for an untrusted certificate's error (empty
// when the URL is not a Service's).
func clusterCA(dispatcher *url.URL) (bundle []byte, note string) {
	namespace, ok := serviceNamespace(dispatcher.Hostname())
	if dispatcher.Scheme != "https" || !ok {
		return nil, ""
	}
	apiServer := inCluster.host()
	if apiServer == "" {
		return nil, fmt.Sprintf(" (not in a Pod, so the ConfigMap %s/%s was not read: pass its ca.crt with WithCAFile)", namespace, CAConfigMap)
	}
	ctx, cancel := context.WithTimeout(context.Background(), caReadTimeout)
	defer cancel()
	bundle, err := readCA(ctx, apiServer, namespace)
	if err != nil {
		return nil, fmt.Sprintf(" (reading the ConfigMap %s/%s failed: %v)", namespace, CAConfigMap, err)
	}
	return bundle, ""
}

// serviceNamespace is the namespace of a Service's in-cluster name,
// SERVICE.NAMESPACE.svc[.cluster.local].
func serviceNamespace(host string) (string, bool) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	trimmed, found := strings.CutSuffix(host, ".svc")
	if !found {
		trimmed, found = strings.CutSuffix(host, ".svc.cluster.local")
	}
	labels := strings.Split(trimmed, ".")
	if !found || len(labels) != 2 || labels[0] == "" || labels[1] == "" {
		return "", false
	}
	return labels[1], true
}

// readCA gets the ConfigMap's ca.crt from the API server as the Pod's
// ServiceAccount.
func readCA(ctx context.Context, apiServer, namespace string) ([]byte, error) {
	token, err := os.ReadFile(inCluster.tokenFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(inCluster.caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s holds no PEM certificate", inCluster.caFile)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	defer transport.CloseIdleConnections()
	request, err := http.NewRequestWithContext(ctx, http.MethodGet,
		"https://"+apiServer+"/api/v1/namespaces/"+url.PathEscape(namespace)+"/configmaps/"+CAConfigMap, nil)
	if err != nil {
		return nil, err
	}
	request.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	request.Header.Set("Accept", "application/json")
	response, err := (&http.Client{Transport: transport}).Do(request)
	if err != nil {
		return nil, err
	}
	defer response.Body.Close()
	// A ConfigMap holds at most 1 MiB.
	data, err := io.ReadAll(io.LimitReader(response.Body, 2<<20))
	if err != nil {
		return nil, err
	}
	if response.StatusCode != http.StatusOK {
		var status struct{ Message string }
		if json.Unmarshal(data, &status) == nil && status.Message != "" {
			return nil, fmt.Errorf("the API server answered %d: %s", response.StatusCode, status.Message)
		}
		return nil, fmt.Errorf("the API server answered %d", response.StatusCode)
	}
	var configMap struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(data, &configMap); err != nil {
		return nil, fmt.Errorf("decoding the ConfigMap: %w", err)
	}
	bundle := configMap.Data["ca.crt"]
	if bundle == "" {
		return nil, fmt.Errorf("it has no ca.crt")
	}
	return []byte(bundle), nil
}

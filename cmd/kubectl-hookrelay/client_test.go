package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// TestServiceProxyCarriesTheUsersToken: without --server the plugin goes
// through the API server's service proxy and hands the dispatcher the
// user's own token, which the API server would otherwise keep.
func TestServiceProxyCarriesTheUsersToken(t *testing.T) {
	var path, forwarded, authorization string
	apiServer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path, forwarded, authorization = r.URL.Path, r.Header.Get("X-Hookrelay-Authorization"), r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"evt_1","deliveries":2}`))
	}))
	defer apiServer.Close()

	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	config := clientcmdapi.NewConfig()
	// kubeconfig credentials are only used over TLS.
	config.Clusters["test"] = &clientcmdapi.Cluster{Server: apiServer.URL, InsecureSkipTLSVerify: true}
	config.AuthInfos["user"] = &clientcmdapi.AuthInfo{Token: "user-token"}
	config.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "user", Namespace: "billing"}
	config.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*config, kubeconfig); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOOKRELAY_SERVER", "")

	root := newRootCommand()
	root.SetArgs([]string{"send", "--kubeconfig", kubeconfig, "--type", "user.created"})
	stdout := os.Stdout
	devnull, _ := os.Open(os.DevNull)
	os.Stdout = devnull
	err := root.Execute()
	os.Stdout = stdout
	if err != nil {
		t.Fatal(err)
	}
	if want := "/api/v1/namespaces/hookrelay-system/services/http:hookrelay-dispatcher:http/proxy/v1/namespaces/billing/events"; path != want {
		t.Errorf("path = %s, want %s", path, want)
	}
	if forwarded != "Bearer user-token" || authorization != "Bearer user-token" {
		t.Errorf("X-Hookrelay-Authorization = %q, Authorization = %q; want the user's token in both", forwarded, authorization)
	}
}

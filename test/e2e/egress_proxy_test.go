package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
)

// egressProxy is the API server's way to Pods: kube-apiserver runs with an
// egress selector that sends its "cluster" traffic (the service proxy)
// through this HTTP CONNECT proxy on a unix socket, which connects a
// made-up Pod address to a process on 127.0.0.1. The API server refuses
// loopback addresses in EndpointSlices, and nothing here may leave the
// machine: the Pod address is never dialed.
type egressProxy struct {
	listener net.Listener
	// ConfigFile is kube-apiserver's --egress-selector-config-file.
	ConfigFile string

	mu     sync.Mutex
	routes map[string]string // Pod address (host:port) → 127.0.0.1 address
}

// startEgressProxy listens on a unix socket in dir and writes the egress
// selector configuration beside it.
func startEgressProxy(dir string) (*egressProxy, error) {
	socket := filepath.Join(dir, "egress.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	p := &egressProxy{listener: listener, ConfigFile: filepath.Join(dir, "egress.yaml"), routes: map[string]string{}}
	config := fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`, socket)
	if err := os.WriteFile(p.ConfigFile, []byte(config), 0o600); err != nil {
		listener.Close()
		return nil, err
	}
	go p.serve()
	return p, nil
}

// route sends the API server's connections to podAddress to address, and
// returns a function that removes the route.
func (p *egressProxy) route(podAddress, address string) (remove func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.routes[podAddress] = address
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		delete(p.routes, podAddress)
	}
}

func (p *egressProxy) close() error { return p.listener.Close() }

func (p *egressProxy) serve() {
	for {
		conn, err := p.listener.Accept()
		if err != nil {
			return // closed
		}
		go p.tunnel(conn)
	}
}

// tunnel answers one CONNECT: 200 and a copy both ways to the routed
// address, 403 for an address with no route.
func (p *egressProxy) tunnel(conn net.Conn) {
	defer conn.Close()
	reader := bufio.NewReader(conn)
	request, err := http.ReadRequest(reader)
	if err != nil {
		return
	}
	p.mu.Lock()
	address, ok := p.routes[request.Host]
	p.mu.Unlock()
	if request.Method != http.MethodConnect || !ok {
		fmt.Fprintf(conn, "HTTP/1.1 403 Forbidden\r\n\r\nno route to %s\n", request.Host)
		return
	}
	upstream, err := net.Dial("tcp", address)
	if err != nil {
		fmt.Fprintf(conn, "HTTP/1.1 502 Bad Gateway\r\n\r\n%v\n", err)
		return
	}
	defer upstream.Close()
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(upstream, reader)
		if tcp, ok := upstream.(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
		}
		close(done)
	}()
	_, _ = io.Copy(conn, upstream)
	<-done
}

package main

import (
	"flag"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/hookrelay/hookrelay/internal/servingcert"
)

// dispatcherCertOptions are the flags of the dispatcher Service's serving
// certificate.
type dispatcherCertOptions struct {
	secret, caConfigMap, service string
	provision                    bool
	// clock is the provisioner's time source; tests inject a fake one.
	clock clock.PassiveClock
}

func (o *dispatcherCertOptions) bind(flags *flag.FlagSet) {
	flags.StringVar(&o.secret, "dispatcher-cert-secret", "hookrelay-dispatcher-tls",
		"Secret in the operator namespace with the dispatcher's serving certificate (tls.crt, tls.key, ca.crt), which the dispatcher mounts.")
	flags.StringVar(&o.caConfigMap, "dispatcher-ca-configmap", "hookrelay-dispatcher-ca",
		"ConfigMap in the operator namespace where the manager publishes the dispatcher's CA (key ca.crt) for producers and the kubectl plugin.")
	flags.StringVar(&o.service, "dispatcher-service-name", "hookrelay-dispatcher",
		"Service in the operator namespace in front of the dispatcher (names in its certificate).")
	flags.BoolVar(&o.provision, "dispatcher-cert-provisioning", true,
		"Make a CA and the dispatcher's certificate in --dispatcher-cert-secret and renew them. "+
			"false: the Secret is cert-manager's (config/certmanager) or yours; the manager only publishes its ca.crt.")
}

// provisioner keeps the dispatcher's Secret (or only publishes its CA).
func (o *dispatcherCertOptions) provisioner(config *rest.Config, scheme *runtime.Scheme, namespace string) (*servingcert.Provisioner, error) {
	// The API server's own client: the manager's cache holds neither
	// this Secret nor this ConfigMap.
	direct, err := client.New(config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	options := servingcert.Options{
		Namespace: namespace, SecretName: o.secret, Name: "hookrelay-dispatcher", CAConfigMapName: o.caConfigMap,
		DNSNames: serviceNames(o.service, namespace), PublishOnly: !o.provision, Clock: o.clock,
	}
	if !o.provision {
		// cert-manager writes the Secret on its own time.
		options.CheckEvery = time.Minute
	}
	return servingcert.New(direct, options)
}

// Package servingcert gives the manager's admission webhook and the
// dispatcher Service serving certificates without cert-manager: a CA and a
// serving certificate are kept in one Secret in the operator namespace (so
// every replica serves the same certificate), and the CA is published to
// those who must trust it: as the caBundle of the
// ValidatingWebhookConfiguration (the webhook, which serves from memory:
// nothing is written to the pod's disk), or in a ConfigMap that producers
// and the kubectl plugin read (the dispatcher, which mounts the Secret).
// The serving certificate is renewed from the same CA well before it
// expires, so the published CA changes only when the CA itself is renewed.
//
// With PublishOnly, the Secret is someone else's (cert-manager's, or one
// the user provides): the Provisioner only publishes its ca.crt.
package servingcert

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// The manager reads and renews its certificate Secrets (the webhook's and
// the dispatcher's), publishes the dispatcher's CA in one ConfigMap and sets
// the caBundle of its one webhook configuration; it can touch no other.
// +kubebuilder:rbac:groups="",namespace=hookrelay-system,resources=secrets,verbs=create
// +kubebuilder:rbac:groups="",namespace=hookrelay-system,resources=secrets,resourceNames=hookrelay-webhook-cert;hookrelay-dispatcher-tls,verbs=get;update
// +kubebuilder:rbac:groups="",namespace=hookrelay-system,resources=configmaps,verbs=create
// +kubebuilder:rbac:groups="",namespace=hookrelay-system,resources=configmaps,resourceNames=hookrelay-dispatcher-ca,verbs=get;update
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,resourceNames=hookrelay-validating-webhook,verbs=get;update

// Keys of the certificate Secret (a kubernetes.io/tls Secret plus the CA,
// as cert-manager writes it) and of the CA ConfigMap.
const (
	keyCert   = corev1.TLSCertKey
	keyKey    = corev1.TLSPrivateKeyKey
	keyCACert = "ca.crt"
	keyCAKey  = "ca.key"
	// CAKey is the CA ConfigMap's key: the PEM bundle to trust.
	CAKey = keyCACert
)

// Lifetimes: the CA lives long so the caBundle rarely changes; the serving
// certificate is renewed when less than renewBefore of it is left.
const (
	caLifetime      = 10 * 365 * 24 * time.Hour
	servingLifetime = 365 * 24 * time.Hour
	renewBefore     = 90 * 24 * time.Hour
	// DefaultCheckEvery is how often a running manager looks again.
	DefaultCheckEvery = 12 * time.Hour
	// retryAfterFailure is how soon a failed check is tried again: a
	// Secret cert-manager has not written yet shows up within a minute.
	retryAfterFailure = time.Minute
)

// Options say where the certificate is kept and who must trust it.
type Options struct {
	// Namespace and SecretName name the certificate Secret.
	Namespace, SecretName string
	// Name is what the certificate serves, such as "hookrelay-webhook":
	// the CA is named after it and the Secret labelled with it.
	Name string
	// ConfigurationName, when set, is the ValidatingWebhookConfiguration
	// whose webhooks get the CA as caBundle.
	ConfigurationName string
	// CAConfigMapName, when set, is the ConfigMap in Namespace that gets
	// the CA under CAKey.
	CAConfigMapName string
	// PublishOnly leaves the Secret to its owner (cert-manager, the user)
	// and only publishes its ca.crt.
	PublishOnly bool
	// CheckEvery is how often Start looks again; DefaultCheckEvery if 0.
	CheckEvery time.Duration
	// DNSNames and IPs go into the serving certificate.
	DNSNames []string
	IPs      []net.IP
	// URL, when set, is the base URL the API server calls instead of the
	// Service (a manager running outside the cluster, as `make dev` runs
	// it): each webhook's clientConfig becomes URL + its path.
	URL string
	// Clock is the time source; tests inject a fake one.
	Clock clock.PassiveClock
}

// Provisioner keeps the serving certificate and the caBundle current.
type Provisioner struct {
	client  client.Client
	options Options
	current atomic.Pointer[tls.Certificate]
}

// New returns a Provisioner that reads and writes through c, which must
// not be a cached client (the manager does not cache this Secret).
func New(c client.Client, options Options) (*Provisioner, error) {
	if options.Namespace == "" || options.SecretName == "" || options.Name == "" {
		return nil, fmt.Errorf("servingcert: the Secret's namespace and name and the certificate's name are required")
	}
	if options.ConfigurationName == "" && options.CAConfigMapName == "" {
		return nil, fmt.Errorf("servingcert: Secret %s/%s: a webhook configuration or a CA ConfigMap is required, or nobody trusts its CA", options.Namespace, options.SecretName)
	}
	if options.URL != "" && options.ConfigurationName == "" {
		return nil, fmt.Errorf("servingcert: a URL %q goes with a webhook configuration", options.URL)
	}
	if options.URL != "" {
		parsed, err := url.Parse(options.URL)
		if err != nil || parsed.Scheme != "https" || parsed.Host == "" {
			return nil, fmt.Errorf("webhook URL %q: want https://HOST:PORT", options.URL)
		}
		// The API server checks the certificate against the URL's host.
		if ip := net.ParseIP(parsed.Hostname()); ip != nil {
			options.IPs = append(options.IPs, ip)
		} else {
			options.DNSNames = append(options.DNSNames, parsed.Hostname())
		}
	}
	if options.Clock == nil {
		options.Clock = clock.RealClock{}
	}
	if options.CheckEvery <= 0 {
		options.CheckEvery = DefaultCheckEvery
	}
	return &Provisioner{client: c, options: options}, nil
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (p *Provisioner) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	certificate := p.current.Load()
	if certificate == nil {
		return nil, fmt.Errorf("the %s serving certificate is not provisioned yet", p.options.Name)
	}
	return certificate, nil
}

// NeedLeaderElection is false: every replica serves the webhook, and
// replicas race safely on the Secret and the ConfigMap.
func (p *Provisioner) NeedLeaderElection() bool { return false }

// Start checks at once and then every CheckEvery while the manager runs,
// renewing the certificate when due. For a webhook, call Ensure once before,
// so that it serves from its first request.
func (p *Provisioner) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("servingcert").WithValues("secret", p.options.SecretName)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		next := p.options.CheckEvery
		// A failure is retried soon; a certificate in use stays valid
		// for renewBefore.
		if err := p.Ensure(ctx); err != nil {
			log.Error(err, "provisioning the serving certificate", "retryIn", retryAfterFailure.String())
			next = retryAfterFailure
		}
		timer.Reset(next)
	}
}

// Ensure creates or renews the certificate Secret as needed (unless
// PublishOnly), serves its certificate, and publishes its CA: the caBundle
// (and URL) of the webhook configuration, the CA ConfigMap.
func (p *Provisioner) Ensure(ctx context.Context) error {
	var secret *corev1.Secret
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		var err error
		if p.options.PublishOnly {
			secret, err = p.readSecret(ctx)
		} else {
			secret, err = p.ensureSecret(ctx)
		}
		return err
	})
	if err != nil {
		return err
	}
	certificate, err := tls.X509KeyPair(secret.Data[keyCert], secret.Data[keyKey])
	if err != nil {
		return fmt.Errorf("Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	p.current.Store(&certificate)
	caBundle := secret.Data[keyCACert]
	if len(caBundle) == 0 {
		// A certificate of a public CA (a provided Secret): clients trust
		// it through their system roots, there is nothing to publish.
		return nil
	}
	if p.options.ConfigurationName != "" {
		if err := retry.RetryOnConflict(retry.DefaultBackoff, func() error { return p.inject(ctx, caBundle) }); err != nil {
			return err
		}
	}
	if p.options.CAConfigMapName != "" {
		return retry.RetryOnConflict(retry.DefaultBackoff, func() error { return p.publish(ctx, caBundle) })
	}
	return nil
}

// readSecret reads a Secret the Provisioner does not write.
func (p *Provisioner) readSecret(ctx context.Context) (*corev1.Secret, error) {
	key := types.NamespacedName{Namespace: p.options.Namespace, Name: p.options.SecretName}
	secret := &corev1.Secret{}
	if err := p.client.Get(ctx, key, secret); err != nil {
		return nil, fmt.Errorf("reading Secret %s (written by cert-manager or by you, as the manager does not provision it): %w", key, err)
	}
	return secret, nil
}

// labels mark what the Provisioner creates: component webhook-cert,
// dispatcher-cert, dispatcher-ca.
func (p *Provisioner) labels(suffix string) map[string]string {
	return map[string]string{"app.kubernetes.io/name": "hookrelay", "app.kubernetes.io/component": strings.TrimPrefix(p.options.Name, "hookrelay-") + suffix}
}

// publish writes the CA bundle into the CA ConfigMap, only when it changes.
func (p *Provisioner) publish(ctx context.Context, caBundle []byte) error {
	key := types.NamespacedName{Namespace: p.options.Namespace, Name: p.options.CAConfigMapName}
	configMap := &corev1.ConfigMap{}
	err := p.client.Get(ctx, key, configMap)
	if apierrors.IsNotFound(err) {
		configMap = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: p.labels("-ca")},
			Data:       map[string]string{CAKey: string(caBundle)},
		}
		if err := p.client.Create(ctx, configMap); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("configmaps"), key.Name, err)
			}
			return fmt.Errorf("creating ConfigMap %s: %w", key, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading ConfigMap %s: %w", key, err)
	}
	if configMap.Data[CAKey] == string(caBundle) {
		return nil
	}
	if configMap.Data == nil {
		configMap.Data = map[string]string{}
	}
	configMap.Data[CAKey] = string(caBundle)
	if err := p.client.Update(ctx, configMap); err != nil {
		if apierrors.IsConflict(err) {
			return err
		}
		return fmt.Errorf("publishing the CA in ConfigMap %s: %w", key, err)
	}
	return nil
}

// ensureSecret returns a Secret whose certificates are current, creating
// or updating it. Replicas race safely: a lost Create or Update (conflict)
// is retried by the caller on the winner's Secret.
func (p *Provisioner) ensureSecret(ctx context.Context) (*corev1.Secret, error) {
	key := types.NamespacedName{Namespace: p.options.Namespace, Name: p.options.SecretName}
	secret := &corev1.Secret{}
	err := p.client.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) {
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, Labels: p.labels("-cert")},
			Type:       corev1.SecretTypeTLS,
		}
		if secret.Data, err = p.issue(nil); err != nil {
			return nil, err
		}
		if err := p.client.Create(ctx, secret); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// Another replica made it first: use that one.
				return nil, apierrors.NewConflict(corev1.Resource("secrets"), key.Name, err)
			}
			return nil, fmt.Errorf("creating Secret %s: %w", key, err)
		}
		return secret, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", key, err)
	}
	ca, renewCA, renewServing := p.check(secret.Data)
	if !renewCA && !renewServing {
		return secret, nil
	}
	signer := ca
	if renewCA {
		signer = nil
	}
	data, err := p.issue(signer)
	if err != nil {
		return nil, err
	}
	if renewCA && ca != nil {
		// Replicas that have not reloaded yet still serve a certificate
		// of the old CA: trust both until the old one expires.
		data[keyCACert] = append(data[keyCACert], ca.certPEM...)
	}
	secret.Data = data
	if err := p.client.Update(ctx, secret); err != nil {
		if apierrors.IsConflict(err) {
			return nil, err
		}
		return nil, fmt.Errorf("renewing the certificates in Secret %s: %w", key, err)
	}
	return secret, nil
}

// authority is a CA that can sign.
type authority struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
	keyPEM  []byte
}

// check returns the Secret's CA (nil if it has none that parses), whether a
// new CA is needed, and whether the serving certificate needs renewing.
func (p *Provisioner) check(data map[string][]byte) (ca *authority, renewCA, renewServing bool) {
	now := p.options.Clock.Now()
	ca, err := parseAuthority(data[keyCACert], data[keyCAKey])
	if err != nil {
		return nil, true, true
	}
	if now.Add(renewBefore).After(ca.cert.NotAfter) {
		return ca, true, true
	}
	serving, err := tls.X509KeyPair(data[keyCert], data[keyKey])
	if err != nil {
		return ca, false, true
	}
	leaf := serving.Leaf
	if leaf == nil || leaf.CheckSignatureFrom(ca.cert) != nil || now.Add(renewBefore).After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return ca, false, true
	}
	for _, name := range p.options.DNSNames {
		if !slices.Contains(leaf.DNSNames, name) {
			return ca, false, true
		}
	}
	for _, ip := range p.options.IPs {
		if !slices.ContainsFunc(leaf.IPAddresses, ip.Equal) {
			return ca, false, true
		}
	}
	return ca, false, false
}

// issue makes a serving certificate signed by ca, making a new CA first
// when ca is nil, and returns the Secret's data.
func (p *Provisioner) issue(ca *authority) (map[string][]byte, error) {
	now := p.options.Clock.Now()
	if ca == nil {
		key, keyPEM, err := newKey()
		if err != nil {
			return nil, err
		}
		template := &x509.Certificate{
			SerialNumber:          serialNumber(),
			Subject:               pkix.Name{CommonName: p.options.Name + "-ca"},
			NotBefore:             now.Add(-time.Hour), // tolerate clock skew
			NotAfter:              now.Add(caLifetime),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
		if err != nil {
			return nil, fmt.Errorf("making the %s CA: %w", p.options.Name, err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		ca = &authority{cert: cert, certPEM: certificatePEM(der), key: key, keyPEM: keyPEM}
	}
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(servingLifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	commonName := p.options.Name
	if len(p.options.DNSNames) > 0 {
		commonName = p.options.DNSNames[0]
	}
	template := &x509.Certificate{
		SerialNumber: serialNumber(),
		Subject:      pkix.Name{CommonName: commonName},
		DNSNames:     p.options.DNSNames,
		IPAddresses:  p.options.IPs,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("making the %s serving certificate: %w", p.options.Name, err)
	}
	return map[string][]byte{
		keyCert:   certificatePEM(der),
		keyKey:    keyPEM,
		keyCACert: ca.certPEM,
		keyCAKey:  ca.keyPEM,
	}, nil
}

// inject sets caBundle (and, with a URL, the URL) on every webhook of the
// configuration, writing only when something changes.
func (p *Provisioner) inject(ctx context.Context, caBundle []byte) error {
	configuration := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := p.client.Get(ctx, types.NamespacedName{Name: p.options.ConfigurationName}, configuration); err != nil {
		return fmt.Errorf("reading ValidatingWebhookConfiguration %s (installed by config/webhook): %w", p.options.ConfigurationName, err)
	}
	changed := false
	for i := range configuration.Webhooks {
		clientConfig := &configuration.Webhooks[i].ClientConfig
		if !bytes.Equal(clientConfig.CABundle, caBundle) {
			clientConfig.CABundle, changed = caBundle, true
		}
		if p.options.URL != "" && clientConfig.Service != nil {
			path := ""
			if clientConfig.Service.Path != nil {
				path = *clientConfig.Service.Path
			}
			target := p.options.URL + path
			clientConfig.URL, clientConfig.Service, changed = &target, nil, true
		}
	}
	if !changed {
		return nil
	}
	if err := p.client.Update(ctx, configuration); err != nil {
		if apierrors.IsConflict(err) {
			return err
		}
		return fmt.Errorf("setting the caBundle of ValidatingWebhookConfiguration %s: %w", p.options.ConfigurationName, err)
	}
	return nil
}

func parseAuthority(certPEM, keyPEM []byte) (*authority, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok || pair.Leaf == nil || !pair.Leaf.IsCA {
		return nil, fmt.Errorf("not a CA")
	}
	// Only the first certificate is this CA; a previous one may follow.
	return &authority{cert: pair.Leaf, certPEM: certificatePEM(pair.Certificate[0]), key: signer, keyPEM: keyPEM}, nil
}

func newKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// serialNumber is random, as RFC 5280 recommends (up to 20 bytes).
func serialNumber() *big.Int {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(err)
	}
	return serial
}

// certificatePEM encodes a DER certificate as PEM.
func certificatePEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// Package chart tests the Helm chart in dist/chart against the real API
// server: rendered with helm (bin/helm, `make helm`), applied with
// --dry-run=server, and compared with the installs under config/ it is
// generated from.
package chart

import (
	"context"
	"encoding/json"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/hookrelay/hookrelay/internal/testenv"
)

// namespace is config/'s, so that the chart's objects and config/'s compare
// as they are.
const namespace = "hookrelay-system"

var env *testenv.Env

func TestMain(m *testing.M) {
	os.Exit(testenv.RunWith(m, &env, testenv.Options{
		CRDDirectoryPaths: []string{filepath.Join(testenv.RepoRoot(), "test", "chart", "testdata", "crds")},
	}))
}

// TestChartFollowsConfig: with the values each install stands for, the
// chart holds the same objects as config/'s install, field for field once
// the API server has defaulted both (metadata but names, namespaces and
// labels aside). It fails when config/ changes without `make chart`.
func TestChartFollowsConfig(t *testing.T) {
	createNamespace(t)
	for _, install := range []struct {
		name   string
		values []string
		// dirs under config/ whose objects together are the install.
		dirs []string
	}{
		{name: "default", dirs: []string{"default"}},
		{name: "postgres", values: []string{"store.type=postgres"}, dirs: []string{"postgres"}},
		{name: "network policy", values: []string{"networkPolicy.enabled=true"}, dirs: []string{"production"}},
		{name: "service monitors and alerts", values: []string{"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true"}, dirs: []string{"default", "prometheus"}},
	} {
		t.Run(install.name, func(t *testing.T) {
			g := NewWithT(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			want := map[string]map[string]any{}
			for _, dir := range install.dirs {
				maps.Copy(want, dryRun(ctx, g, "", "-k", filepath.Join(testenv.RepoRoot(), "config", dir)))
			}
			// The chart installs into the release's namespace, which helm
			// install --create-namespace makes.
			delete(want, "Namespace//"+namespace)
			got := dryRun(ctx, g, helmTemplate(ctx, g, install.values...), "-f", "-")
			g.Expect(slices.Sorted(maps.Keys(got))).To(Equal(slices.Sorted(maps.Keys(want))), "the chart's objects are config/%v's", install.dirs)
			for key, object := range want {
				chartObject := got[key]
				g.Expect(labels(chartObject)).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "Helm"), key)
				for name, value := range labels(object) {
					g.Expect(labels(chartObject)).To(HaveKeyWithValue(name, value), "%s keeps config/'s labels", key)
				}
				g.Expect(withoutMetadata(chartObject)).To(Equal(withoutMetadata(object)),
					"%s differs from config/%v's: run make chart, or give the chart a value for the change", key, install.dirs)
			}
		})
	}
}

// TestChartWithValuesPassesServerDryRun renders the chart with the issue's
// non-default values (PostgreSQL, TLS, ServiceMonitors, and the rest) and
// applies it with --dry-run=server; the values land where they should.
func TestChartWithValuesPassesServerDryRun(t *testing.T) {
	createNamespace(t)
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rendered := helmTemplate(ctx, g,
		"store.type=postgres", "tls.enabled=true", "metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true",
		"networkPolicy.enabled=true", "pdb.enabled=false", "store.postgres.replicas=5", "store.postgres.dsnSecretName=db",
		"dispatcher.headerPrefix=Acme", "dispatcher.egressAllowCIDRs={10.1.0.0/16,10.2.0.0/16}",
		"networkPolicy.egressAllowCIDRs={10.3.0.0/16}", "dispatcher.extraArgs={--retention=72h}",
		"image.repository=registry.example/hookrelay", "image.tag=v9.9.9", "manager.replicas=3", "manager.goMemLimit=300MiB",
		"dispatcher.resources.limits.memory=2Gi")
	objects := dryRun(ctx, g, rendered, "-f", "-")
	g.Expect(objects).NotTo(HaveKey("StatefulSet/" + namespace + "/hookrelay-dispatcher"))
	g.Expect(objects).NotTo(HaveKey("PodDisruptionBudget/" + namespace + "/hookrelay-dispatcher"))

	dispatcher := decode[appsv1.Deployment](g, objects["Deployment/"+namespace+"/hookrelay-dispatcher"])
	g.Expect(*dispatcher.Spec.Replicas).To(BeEquivalentTo(5))
	pod := dispatcher.Spec.Template.Spec
	container := pod.Containers[0]
	g.Expect(container.Image).To(Equal("registry.example/hookrelay:v9.9.9"))
	g.Expect(container.Args).To(ContainElements("--store=postgres", "--header-prefix=Acme",
		"--egress-allow-cidr=10.1.0.0/16,10.2.0.0/16", "--retention=72h",
		"--tls-cert-file=/etc/hookrelay/tls/tls.crt", "--tls-key-file=/etc/hookrelay/tls/tls.key"))
	g.Expect(container.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "tls", MountPath: "/etc/hookrelay/tls", ReadOnly: true}))
	g.Expect(container.ReadinessProbe.HTTPGet.Scheme).To(Equal(corev1.URISchemeHTTPS))
	g.Expect(container.Resources.Limits.Memory().String()).To(Equal("2Gi"))
	secrets := map[string]string{}
	for _, volume := range pod.Volumes {
		if volume.Secret != nil {
			secrets[volume.Name] = volume.Secret.SecretName
		}
	}
	g.Expect(secrets).To(Equal(map[string]string{"postgres": "db", "tls": "hookrelay-dispatcher-tls"}))

	manager := decode[appsv1.Deployment](g, objects["Deployment/"+namespace+"/hookrelay-manager"])
	g.Expect(*manager.Spec.Replicas).To(BeEquivalentTo(3))
	g.Expect(manager.Spec.Template.Spec.Containers[0].Env).To(ContainElement(corev1.EnvVar{Name: "GOMEMLIMIT", Value: "300MiB"}))

	policy := decode[networkingv1.NetworkPolicy](g, objects["NetworkPolicy/"+namespace+"/hookrelay-dispatcher"])
	var allowed []string
	for _, rule := range policy.Spec.Egress {
		for _, peer := range rule.To {
			if peer.IPBlock != nil && len(peer.IPBlock.Except) == 0 {
				allowed = append(allowed, peer.IPBlock.CIDR)
			}
		}
	}
	g.Expect(allowed).To(ConsistOf("10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"))

	monitor := decode[monitoringv1.ServiceMonitor](g, objects["ServiceMonitor/"+namespace+"/hookrelay-dispatcher"])
	g.Expect(monitor.Spec.Endpoints).To(HaveLen(1))
	g.Expect(monitor.Spec.Endpoints[0].Scheme).To(HaveValue(BeEquivalentTo("https")))
	g.Expect(monitor.Spec.Endpoints[0].TLSConfig.CA.Secret.Name).To(Equal("hookrelay-dispatcher-tls"))
	managerMonitor := decode[monitoringv1.ServiceMonitor](g, objects["ServiceMonitor/"+namespace+"/hookrelay-manager"])
	g.Expect(managerMonitor.Spec.Endpoints).To(HaveLen(1))
	g.Expect(managerMonitor.Spec.Endpoints[0].Port).To(Equal("metrics"))
}

// TestChartCertManagerCertificate: with tls.certManager.enabled a
// cert-manager Certificate writes the dispatcher's Secret for its Service's
// names; without an issuer the chart says which value is missing. (The API
// server here has no cert-manager CRDs: rendered, not applied.)
func TestChartCertManagerCertificate(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rendered := helmTemplate(ctx, g, "tls.enabled=true", "tls.certManager.enabled=true",
		"tls.certManager.issuerRef.name=cluster-ca", "tls.certManager.issuerRef.kind=ClusterIssuer", "tls.secretName=dispatcher-cert")
	var certificate struct {
		Kind string
		Spec struct {
			SecretName string
			DNSNames   []string
			IssuerRef  struct{ Name, Kind, Group string }
		}
	}
	found := false
	for document := range strings.SplitSeq(rendered, "\n---\n") {
		g.Expect(yaml.Unmarshal([]byte(document), &certificate)).To(Succeed())
		if certificate.Kind == "Certificate" {
			found = true
			break
		}
	}
	g.Expect(found).To(BeTrue(), "no Certificate in:\n%s", rendered)
	g.Expect(certificate.Spec.SecretName).To(Equal("dispatcher-cert"))
	g.Expect(certificate.Spec.DNSNames).To(ContainElement("hookrelay-dispatcher." + namespace + ".svc"))
	g.Expect(certificate.Spec.IssuerRef).To(Equal(struct{ Name, Kind, Group string }{"cluster-ca", "ClusterIssuer", "cert-manager.io"}))

	_, stderr, err := helm(ctx, "template", "hookrelay", chartDir(), "--set", "tls.enabled=true,tls.certManager.enabled=true")
	g.Expect(err).To(HaveOccurred())
	g.Expect(stderr).To(ContainSubstring("tls.certManager.issuerRef.name"))
}

// TestChartRefusesBadValues: a value out of its range names the value.
func TestChartRefusesBadValues(t *testing.T) {
	for _, value := range []string{"store.type=bolt", "image.pullPolicy=Sometimes", "store.postgres.replicas=0", "dispatcher.extraArgs={retention}"} {
		t.Run(value, func(t *testing.T) {
			g := NewWithT(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, stderr, err := helm(ctx, "template", "hookrelay", chartDir(), "--set", value)
			g.Expect(err).To(HaveOccurred())
			field, _, _ := strings.Cut(value, "=")
			g.Expect(stderr).To(ContainSubstring("/" + strings.ReplaceAll(field, ".", "/")))
		})
	}
}

func chartDir() string { return filepath.Join(testenv.RepoRoot(), "dist", "chart") }

// helm runs bin/helm (or $HELM), which `make helm` builds.
func helm(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	binary := os.Getenv("HELM")
	if binary == "" {
		binary = filepath.Join(testenv.RepoRoot(), "bin", "helm")
	}
	if _, err := os.Stat(binary); err != nil {
		return "", "", &exec.Error{Name: binary, Err: err}
	}
	cmd := exec.CommandContext(ctx, binary, args...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func helmTemplate(ctx context.Context, g Gomega, values ...string) string {
	args := []string{"template", "hookrelay", chartDir(), "--namespace", namespace}
	for _, value := range values {
		args = append(args, "--set", value)
	}
	stdout, stderr, err := helm(ctx, args...)
	g.Expect(err).NotTo(HaveOccurred(), "helm %v (run make helm): %s", args, stderr)
	return stdout
}

// createNamespace makes the release's namespace, as helm install
// --create-namespace would.
func createNamespace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

// dryRun applies manifests (stdin, or what args name) with --dry-run=server
// and returns the objects as the API server would store them, by
// kind/namespace/name.
func dryRun(ctx context.Context, g Gomega, stdin string, args ...string) map[string]map[string]any {
	stdout, stderr, err := env.Kubectl(ctx, stdin, append([]string{"apply", "--dry-run=server", "-o", "json"}, args...)...)
	g.Expect(err).NotTo(HaveOccurred(), stderr)
	var list struct{ Items []map[string]any }
	g.Expect(json.Unmarshal([]byte(stdout), &list)).To(Succeed())
	if len(list.Items) == 0 {
		// One object is printed as itself, not in a List.
		var single map[string]any
		g.Expect(json.Unmarshal([]byte(stdout), &single)).To(Succeed())
		list.Items = append(list.Items, single)
	}
	objects := map[string]map[string]any{}
	for _, object := range list.Items {
		metadata := object["metadata"].(map[string]any)
		name, _ := metadata["name"].(string)
		ns, _ := metadata["namespace"].(string)
		key := object["kind"].(string) + "/" + ns + "/" + name
		g.Expect(objects).NotTo(HaveKey(key), "two objects %s", key)
		objects[key] = object
	}
	return objects
}

func labels(object map[string]any) map[string]any {
	labels, _ := object["metadata"].(map[string]any)["labels"].(map[string]any)
	return labels
}

// withoutMetadata is the object but for its metadata, which the chart and
// the server add to (labels, annotations, uid, timestamps).
func withoutMetadata(object map[string]any) map[string]any {
	out := map[string]any{}
	for key, value := range object {
		if key != "metadata" {
			out[key] = value
		}
	}
	return out
}

func decode[T any](g Gomega, object map[string]any) *T {
	g.Expect(object).NotTo(BeNil())
	data, err := json.Marshal(object)
	g.Expect(err).NotTo(HaveOccurred())
	out := new(T)
	g.Expect(json.Unmarshal(data, out)).To(Succeed())
	return out
}

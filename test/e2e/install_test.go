package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/hookrelay/hookrelay/internal/testenv"
)

// installedObjects are the objects every install holds, but the dispatcher's
// workload.
var installedObjects = []string{
	"clusterrole.rbac.authorization.k8s.io/hookrelay-dispatcher",
	"clusterrole.rbac.authorization.k8s.io/hookrelay-editor",
	"clusterrole.rbac.authorization.k8s.io/hookrelay-manager",
	"clusterrole.rbac.authorization.k8s.io/hookrelay-metrics-reader",
	"clusterrole.rbac.authorization.k8s.io/hookrelay-operator",
	"clusterrole.rbac.authorization.k8s.io/hookrelay-publisher",
	"clusterrole.rbac.authorization.k8s.io/hookrelay-viewer",
	"clusterrolebinding.rbac.authorization.k8s.io/hookrelay-dispatcher",
	"clusterrolebinding.rbac.authorization.k8s.io/hookrelay-manager",
	"customresourcedefinition.apiextensions.k8s.io/webhookendpoints.hookrelay.dev",
	"customresourcedefinition.apiextensions.k8s.io/webhooksubscriptions.hookrelay.dev",
	"deployment.apps/hookrelay-manager",
	"namespace/hookrelay-system",
	"poddisruptionbudget.policy/hookrelay-dispatcher",
	"poddisruptionbudget.policy/hookrelay-manager",
	"role.rbac.authorization.k8s.io/hookrelay-dispatcher",
	"role.rbac.authorization.k8s.io/hookrelay-dispatcher-ca-reader",
	"role.rbac.authorization.k8s.io/hookrelay-manager",
	"rolebinding.rbac.authorization.k8s.io/hookrelay-dispatcher",
	"rolebinding.rbac.authorization.k8s.io/hookrelay-dispatcher-ca-reader",
	"rolebinding.rbac.authorization.k8s.io/hookrelay-manager",
	"service/hookrelay-dispatcher",
	"service/hookrelay-manager-metrics",
	"service/hookrelay-webhook",
	"serviceaccount/hookrelay-dispatcher",
	"serviceaccount/hookrelay-manager",
	"validatingadmissionpolicy.admissionregistration.k8s.io/hookrelay-endpoint-annotations",
	"validatingadmissionpolicybinding.admissionregistration.k8s.io/hookrelay-endpoint-annotations",
	"validatingwebhookconfiguration.admissionregistration.k8s.io/hookrelay-validating-webhook",
}

// TestInstallManifestsPassServerDryRun applies each install (config/default,
// config/postgres, config/production) with --dry-run=server and accounts for
// every object it holds.
func TestInstallManifestsPassServerDryRun(t *testing.T) {
	for _, install := range []struct {
		dir string
		// dispatcher are the objects that run the dispatcher.
		dispatcher []string
		// check looks further into the rendered manifests.
		check func(g Gomega, rendered string)
	}{
		{dir: "default", dispatcher: []string{"statefulset.apps/hookrelay-dispatcher"}, check: func(g Gomega, rendered string) {
			checkDispatcherTLS(g, rendered, renderedObject[appsv1.StatefulSet](g, rendered, "StatefulSet", "hookrelay-dispatcher").Spec.Template.Spec)
		}},
		{
			dir:        "postgres",
			dispatcher: []string{"deployment.apps/hookrelay-dispatcher"},
			check:      checkPostgresDispatcher,
		},
		{
			dir: "production",
			dispatcher: []string{"statefulset.apps/hookrelay-dispatcher",
				"networkpolicy.networking.k8s.io/hookrelay-dispatcher", "networkpolicy.networking.k8s.io/hookrelay-manager"},
			check: checkNetworkPolicyPorts,
		},
	} {
		t.Run(install.dir, func(t *testing.T) {
			g := NewWithT(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			dir := filepath.Join(testenv.RepoRoot(), "config", install.dir)
			stdout, stderr, err := env.Kubectl(ctx, "", "apply", "-k", dir, "--dry-run=server")
			g.Expect(err).NotTo(HaveOccurred(), stderr)

			var objects []string
			for line := range strings.SplitSeq(strings.TrimSpace(stdout), "\n") {
				g.Expect(line).To(HaveSuffix("(server dry run)"), "every object is applied by the server")
				objects = append(objects, strings.Fields(line)[0])
			}
			slices.Sort(objects)
			want := slices.Sorted(slices.Values(append(slices.Clone(installedObjects), install.dispatcher...)))
			g.Expect(objects).To(Equal(want))

			// One image name, set in one place, tagged with VERSION (the
			// tag make images builds).
			rendered, stderr, err := env.Kubectl(ctx, "", "kustomize", dir)
			g.Expect(err).NotTo(HaveOccurred(), stderr)
			version, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "VERSION"))
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(strings.Count(rendered, "image: ghcr.io/hookrelay/hookrelay:"+strings.TrimSpace(string(version))+"\n")).
				To(Equal(2), "config/default's images tag is VERSION's")
			g.Expect(rendered).NotTo(ContainSubstring("image: hookrelay\n"))
			if install.check != nil {
				install.check(g, rendered)
			}
		})
	}
}

// checkPostgresDispatcher: three replicas on PostgreSQL, the DSN read from
// the Secret the user creates, no volume to re-attach, the pod's name as
// the replica's.
func checkPostgresDispatcher(g Gomega, rendered string) {
	dispatcher := renderedObject[appsv1.Deployment](g, rendered, "Deployment", "hookrelay-dispatcher")
	checkDispatcherTLS(g, rendered, dispatcher.Spec.Template.Spec)
	g.Expect(*dispatcher.Spec.Replicas).To(BeEquivalentTo(3))
	pod := dispatcher.Spec.Template.Spec
	g.Expect(pod.Containers).To(HaveLen(1))
	container := pod.Containers[0]
	g.Expect(container.Args).To(ContainElements("--store=postgres", "--postgres-dsn-file=/etc/hookrelay/postgres/dsn"))
	g.Expect(container.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "postgres", MountPath: "/etc/hookrelay/postgres", ReadOnly: true}))
	g.Expect(container.Env).To(ContainElement(corev1.EnvVar{Name: "POD_NAME",
		ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}))
	g.Expect(container.ReadinessProbe.HTTPGet.Path).To(Equal("/readyz"))
	for _, volume := range pod.Volumes {
		g.Expect(volume.PersistentVolumeClaim).To(BeNil(), "no volume to re-attach when a node is lost")
		if volume.Secret != nil {
			g.Expect(volume.Secret.SecretName).To(BeElementOf("hookrelay-postgres", "hookrelay-dispatcher-tls"))
		}
	}
	g.Expect(pod.TopologySpreadConstraints).To(HaveLen(1))
	g.Expect(pod.TopologySpreadConstraints[0].TopologyKey).To(Equal(corev1.LabelHostname))
}

// checkDispatcherTLS: the dispatcher serves TLS on the Service's https port
// from the Secret hookrelay-dispatcher-tls (without the CA's key), and its
// probes speak HTTPS.
func checkDispatcherTLS(g Gomega, rendered string, pod corev1.PodSpec) {
	container := pod.Containers[0]
	g.Expect(container.Args).To(ContainElements("--listen-address=:8443",
		"--tls-cert-file=/etc/hookrelay/tls/tls.crt", "--tls-key-file=/etc/hookrelay/tls/tls.key"))
	g.Expect(container.Ports).To(Equal([]corev1.ContainerPort{{Name: "https", ContainerPort: 8443}}))
	g.Expect(container.VolumeMounts).To(ContainElement(corev1.VolumeMount{Name: "tls", MountPath: "/etc/hookrelay/tls", ReadOnly: true}))
	for _, probe := range []*corev1.Probe{container.LivenessProbe, container.ReadinessProbe} {
		g.Expect(probe.HTTPGet.Scheme).To(Equal(corev1.URISchemeHTTPS))
		g.Expect(probe.HTTPGet.Port.String()).To(Equal("https"))
	}
	var tlsVolume *corev1.SecretVolumeSource
	for _, volume := range pod.Volumes {
		if volume.Name == "tls" {
			tlsVolume = volume.Secret
		}
	}
	g.Expect(tlsVolume).NotTo(BeNil())
	g.Expect(tlsVolume.SecretName).To(Equal("hookrelay-dispatcher-tls"))
	g.Expect(tlsVolume.Items).To(ConsistOf(corev1.KeyToPath{Key: "tls.crt", Path: "tls.crt"}, corev1.KeyToPath{Key: "tls.key", Path: "tls.key"}))

	service := renderedObject[corev1.Service](g, rendered, "Service", "hookrelay-dispatcher")
	g.Expect(service.Spec.Ports).To(HaveLen(1))
	g.Expect(service.Spec.Ports[0].Name).To(Equal("https"))
	g.Expect(service.Spec.Ports[0].Port).To(BeEquivalentTo(443))
	g.Expect(service.Spec.Ports[0].TargetPort.String()).To(Equal("https"))
}

// checkNetworkPolicyPorts: every port a NetworkPolicy lets in by name is a
// port of the pods it selects, so renaming a container's port cannot shut
// it silently.
func checkNetworkPolicyPorts(g Gomega, rendered string) {
	pods := map[string]corev1.PodSpec{
		"hookrelay-dispatcher": renderedObject[appsv1.StatefulSet](g, rendered, "StatefulSet", "hookrelay-dispatcher").Spec.Template.Spec,
		"hookrelay-manager":    renderedObject[appsv1.Deployment](g, rendered, "Deployment", "hookrelay-manager").Spec.Template.Spec,
	}
	for name, pod := range pods {
		var ports []string
		for _, container := range pod.Containers {
			for _, port := range container.Ports {
				ports = append(ports, port.Name)
			}
		}
		policy := renderedObject[networkingv1.NetworkPolicy](g, rendered, "NetworkPolicy", name)
		g.Expect(policy.Spec.Ingress).NotTo(BeEmpty())
		for _, rule := range policy.Spec.Ingress {
			for _, port := range rule.Ports {
				g.Expect(port.Port.Type).To(Equal(intstr.String), "%s lets in ports by name", name)
				g.Expect(ports).To(ContainElement(port.Port.StrVal), "%s lets in a port its pods do not have", name)
			}
		}
	}
}

// TestPostgresDispatcherPodFollowsTheDefault: config/postgres writes the
// dispatcher's pod out again (a Deployment, not the default's StatefulSet);
// it differs from the default's only where the store needs it.
func TestPostgresDispatcherPodFollowsTheDefault(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	render := func(dir string) string {
		rendered, stderr, err := env.Kubectl(ctx, "", "kustomize", filepath.Join(testenv.RepoRoot(), "config", dir))
		g.Expect(err).NotTo(HaveOccurred(), stderr)
		return rendered
	}
	bolt := renderedObject[appsv1.StatefulSet](g, render("default"), "StatefulSet", "hookrelay-dispatcher").Spec.Template
	postgres := renderedObject[appsv1.Deployment](g, render("postgres"), "Deployment", "hookrelay-dispatcher").Spec.Template
	g.Expect(bolt.Spec.Containers).To(HaveLen(1))
	g.Expect(postgres.Spec.Containers).To(HaveLen(1))
	// Every flag and variable of the default, and more.
	g.Expect(postgres.Spec.Containers[0].Args).To(ContainElements(bolt.Spec.Containers[0].Args))
	g.Expect(postgres.Spec.Containers[0].Env).To(ContainElements(bolt.Spec.Containers[0].Env))
	// The rest is the same, but the volumes and the spread over nodes.
	for _, pod := range []*corev1.PodTemplateSpec{&bolt, &postgres} {
		pod.Spec.Volumes, pod.Spec.TopologySpreadConstraints = nil, nil
		container := &pod.Spec.Containers[0]
		container.Args, container.Env, container.VolumeMounts = nil, nil, nil
	}
	g.Expect(postgres).To(Equal(bolt))
}

// renderedObject decodes the object of kind and name from rendered
// manifests.
func renderedObject[T any](g Gomega, rendered, kind, name string) *T {
	var found *T
	for document := range strings.SplitSeq(rendered, "\n---\n") {
		var meta struct {
			Kind     string
			Metadata struct{ Name string }
		}
		g.Expect(yaml.Unmarshal([]byte(document), &meta)).To(Succeed())
		if meta.Kind == kind && meta.Metadata.Name == name {
			found = new(T)
			g.Expect(yaml.Unmarshal([]byte(document), found)).To(Succeed())
		}
	}
	g.Expect(found).NotTo(BeNil(), "no %s %s in:\n%s", kind, name, rendered)
	return found
}

// TestCertManagerComponent: config/certmanager added to an install makes
// cert-manager write the Secret the dispatcher mounts, for the names of its
// Service, signed by a CA of its own, and turns the manager's provisioning
// off; nothing else changes. (The API server here has no cert-manager CRDs
// to apply it to.)
func TestCertManagerComponent(t *testing.T) {
	for _, install := range []string{"default", "postgres"} {
		t.Run(install, func(t *testing.T) {
			g := NewWithT(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			config := filepath.Join(testenv.RepoRoot(), "config")
			overlay := t.TempDir()
			// kustomize takes only relative paths to other kustomizations.
			relative, err := filepath.Rel(overlay, config)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(os.WriteFile(filepath.Join(overlay, "kustomization.yaml"),
				[]byte("resources:\n- "+relative+"/"+install+"\ncomponents:\n- "+relative+"/certmanager\n"), 0o600)).To(Succeed())
			render := func(dir string) string {
				rendered, stderr, err := env.Kubectl(ctx, "", "kustomize", dir)
				g.Expect(err).NotTo(HaveOccurred(), stderr)
				return rendered
			}
			base, rendered := render(filepath.Join(config, install)), render(overlay)

			type issuerRef struct{ Kind, Name string }
			type certificate struct {
				Spec struct {
					SecretName string    `json:"secretName"`
					DNSNames   []string  `json:"dnsNames"`
					IsCA       bool      `json:"isCA"`
					IssuerRef  issuerRef `json:"issuerRef"`
				}
			}
			type issuer struct {
				Spec struct {
					SelfSigned *struct{} `json:"selfSigned"`
					CA         *struct {
						SecretName string `json:"secretName"`
					} `json:"ca"`
				}
			}
			serving := renderedObject[certificate](g, rendered, "Certificate", "hookrelay-dispatcher")
			var mounted string
			for _, volume := range dispatcherPod(g, rendered).Volumes {
				if volume.Name == "tls" {
					mounted = volume.Secret.SecretName
				}
			}
			g.Expect(serving.Spec.SecretName).To(Equal(mounted))
			service := renderedObject[corev1.Service](g, rendered, "Service", "hookrelay-dispatcher")
			g.Expect(serving.Spec.DNSNames).To(ConsistOf(service.Name+"."+service.Namespace+".svc", service.Name+"."+service.Namespace+".svc.cluster.local"))
			g.Expect(serving.Spec.IsCA).To(BeFalse())
			caIssuer := renderedObject[issuer](g, rendered, serving.Spec.IssuerRef.Kind, serving.Spec.IssuerRef.Name)
			g.Expect(caIssuer.Spec.CA).NotTo(BeNil())
			authority := renderedObject[certificate](g, rendered, "Certificate", "hookrelay-dispatcher-ca")
			g.Expect(authority.Spec.IsCA).To(BeTrue())
			g.Expect(authority.Spec.SecretName).To(Equal(caIssuer.Spec.CA.SecretName))
			g.Expect(renderedObject[issuer](g, rendered, authority.Spec.IssuerRef.Kind, authority.Spec.IssuerRef.Name).Spec.SelfSigned).NotTo(BeNil())

			// The rest is the install as it was: four objects and one flag more.
			g.Expect(strings.Count(rendered, "\n---\n")).To(Equal(strings.Count(base, "\n---\n") + 4))
			manager := renderedObject[appsv1.Deployment](g, rendered, "Deployment", "hookrelay-manager")
			args := &manager.Spec.Template.Spec.Containers[0].Args
			g.Expect(*args).To(HaveExactElements(append(slices.Clone(
				renderedObject[appsv1.Deployment](g, base, "Deployment", "hookrelay-manager").Spec.Template.Spec.Containers[0].Args),
				"--dispatcher-cert-provisioning=false")))
			*args = (*args)[:len(*args)-1]
			g.Expect(manager).To(Equal(renderedObject[appsv1.Deployment](g, base, "Deployment", "hookrelay-manager")))
		})
	}
}

// dispatcherPod is the pod of the rendered dispatcher workload, a
// StatefulSet (config/default) or a Deployment (config/postgres).
func dispatcherPod(g Gomega, rendered string) corev1.PodSpec {
	if strings.Contains(rendered, "kind: StatefulSet\n") {
		return renderedObject[appsv1.StatefulSet](g, rendered, "StatefulSet", "hookrelay-dispatcher").Spec.Template.Spec
	}
	return renderedObject[appsv1.Deployment](g, rendered, "Deployment", "hookrelay-dispatcher").Spec.Template.Spec
}

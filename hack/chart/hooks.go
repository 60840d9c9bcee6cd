package main

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// template is one object of the chart, shown only when condition holds.
type template struct {
	object    object
	condition string
}

// markers stand in the object for template text until it is YAML: a hook
// sets a field to a marker, and expand replaces the marker's line.
type markers struct {
	expansions []func(line, marker string) (string, error)
}

// Markers that are map keys start with zz to sort last: the first key of a
// list's item shares the line with its "- ".
var markerPattern = regexp.MustCompile(`(?:__|zz)helm_(\d+)__`)

// templateDelimiters are Go template delimiters in config's text.
var templateDelimiters = regexp.MustCompile(`\{\{|\}\}`)

func (m *markers) add(expand func(line, marker string) (string, error)) string {
	m.expansions = append(m.expansions, expand)
	return fmt.Sprintf("__helm_%d__", len(m.expansions)-1)
}

// scalar is replaced by {{ expression }} where it stands, as a value or in a
// string.
func (m *markers) scalar(expression string) string {
	return m.add(func(line, marker string) (string, error) {
		return strings.Replace(line, marker, "{{ "+expression+" }}", 1), nil
	})
}

// value is a map's value replaced by expression's YAML: "key: marker"
// becomes "key:" and the value under it.
func (m *markers) value(expression string) string {
	return m.add(func(line, marker string) (string, error) {
		indent := len(line) - len(strings.TrimLeft(line, " "))
		key, found := strings.CutSuffix(line, " "+marker)
		if !found || !strings.HasSuffix(key, ":") {
			return "", fmt.Errorf("marker for %s is not a map's value: %q", expression, line)
		}
		return fmt.Sprintf("%s\n{{- toYaml (%s) | nindent %d }}", key, expression, indent+2), nil
	})
}

// lines replaces a list's item ("- marker") or a map's key ("marker: null")
// with text, indented as the marker was; text gets the indentation, for
// nindent.
func (m *markers) lines(text func(indent int) string) string {
	return "zz" + strings.TrimPrefix(m.add(func(line, marker string) (string, error) {
		trimmed := strings.TrimLeft(line, " ")
		indent := len(line) - len(trimmed)
		if trimmed != "- "+marker && trimmed != marker+": null" {
			return "", fmt.Errorf("marker is neither a list item nor a map key: %q", line)
		}
		var out []string
		for l := range strings.SplitSeq(strings.TrimRight(text(indent), "\n"), "\n") {
			out = append(out, strings.Repeat(" ", indent)+l)
		}
		return strings.Join(out, "\n"), nil
	}), "__")
}

func (m *markers) expand(text string) (string, error) {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		for {
			match := markerPattern.FindStringSubmatchIndex(line)
			if match == nil {
				break
			}
			var index int
			if _, err := fmt.Sscan(line[match[2]:match[3]], &index); err != nil {
				return "", err
			}
			expanded, err := m.expansions[index](line, line[match[0]:match[1]])
			if err != nil {
				return "", err
			}
			line = expanded
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n"), nil
}

func (t template) render(image string) (string, error) {
	o := object(deepCopy(map[string]any(t.object)).(map[string]any))
	m := &markers{}
	if err := hooks(o, m, image); err != nil {
		return "", err
	}
	text, err := marshal(o)
	if err != nil {
		return "", err
	}
	// config's own braces (a PrometheusRule's {{ $value }}) are kept for
	// Prometheus, not taken by Helm; the release's namespace is Helm's.
	const namespaceMarker = "__helm_release_namespace__"
	text = strings.ReplaceAll(text, releaseNamespace, namespaceMarker)
	text = templateDelimiters.ReplaceAllStringFunc(text, func(delimiter string) string { return "{{`" + delimiter + "`}}" })
	text = strings.ReplaceAll(text, namespaceMarker, releaseNamespace)
	if text, err = m.expand(text); err != nil {
		return "", err
	}
	text = strings.ReplaceAll(text, "'"+releaseNamespace+"'", releaseNamespace)
	if strings.Contains(text, configNamespace) {
		return "", fmt.Errorf("names %s where the chart needs the release's namespace; add a hook in hack/chart", configNamespace)
	}
	if t.condition != "" {
		text = "{{- if " + t.condition + " }}\n" + text + "{{- end }}\n"
	}
	return generatedHeader + text, nil
}

// hooks put the chart's values into o.
func hooks(o object, m *markers, image string) error {
	namespaces(o)
	metadata := o.metadata()
	labels, _ := metadata["labels"].(map[string]any)
	if labels == nil {
		labels = map[string]any{}
		metadata["labels"] = labels
	}
	labels[m.lines(func(indent int) string {
		return fmt.Sprintf(`{{- include "hookrelay.chartLabels" . | nindent %d }}`, indent)
	})] = nil
	if o.kind() == kindCRD {
		// Uninstalling the chart keeps the CRDs and so the users' objects.
		annotations, _ := metadata["annotations"].(map[string]any)
		if annotations == nil {
			annotations = map[string]any{}
			metadata["annotations"] = annotations
		}
		annotations["helm.sh/resource-policy"] = "keep"
	}
	for _, container := range podContainers(o) {
		if container["image"] != image {
			return fmt.Errorf("container %s runs %v, not config/default's %s", container["name"], container["image"], image)
		}
		container["image"] = m.scalar(`include "hookrelay.image" .`)
		container["imagePullPolicy"] = m.scalar(".Values.image.pullPolicy")
	}
	switch {
	case o.kind() == kindDeployment && o.name() == "hookrelay-manager":
		o["spec"].(map[string]any)["replicas"] = m.scalar(".Values.manager.replicas")
		return containerHooks(o, "manager", func(container map[string]any) error {
			container["resources"] = m.value(".Values.manager.resources")
			goMemLimit, err := named(container["env"], "GOMEMLIMIT")
			if err != nil {
				return fmt.Errorf("%s, container manager, env: %w", o, err)
			}
			goMemLimit["value"] = m.scalar(".Values.manager.goMemLimit | quote")
			return nil
		})
	case o.kind() == "StatefulSet" && o.name() == dispatcherName:
		if err := dispatcherHooks(o, m); err != nil {
			return err
		}
		return volumeClaimHooks(o, m)
	case o.kind() == kindDeployment && o.name() == dispatcherName:
		o["spec"].(map[string]any)["replicas"] = m.scalar(".Values.store.postgres.replicas")
		if err := dispatcherHooks(o, m); err != nil {
			return err
		}
		volume, err := named(podSpec(o)["volumes"], "postgres")
		if err != nil {
			return err
		}
		volume["secret"].(map[string]any)["secretName"] = m.scalar(".Values.store.postgres.dsnSecretName")
	case o.kind() == kindNetworkPolicy:
		return networkPolicyHooks(o, m)
	case o.kind() == kindServiceMonitor && o.name() == dispatcherName:
		return serviceMonitorHooks(o, m)
	}
	return nil
}

// namespaces puts the release's namespace wherever config/ names its own.
func namespaces(o object) {
	metadata := o.metadata()
	if _, ok := metadata["namespace"]; ok {
		metadata["namespace"] = releaseNamespace
	}
	subjects, _ := o["subjects"].([]any)
	for _, subject := range subjects {
		if s := subject.(map[string]any); s["namespace"] == configNamespace {
			s["namespace"] = releaseNamespace
		}
	}
	webhooks, _ := o["webhooks"].([]any)
	for _, webhook := range webhooks {
		clientConfig, _ := webhook.(map[string]any)["clientConfig"].(map[string]any)
		if service, ok := clientConfig["service"].(map[string]any); ok && service["namespace"] == configNamespace {
			service["namespace"] = releaseNamespace
		}
	}
	spec, _ := o["spec"].(map[string]any)
	if selector, ok := spec["namespaceSelector"].(map[string]any); ok {
		if names, ok := selector["matchNames"].([]any); ok {
			for i, name := range names {
				if name == configNamespace {
					names[i] = releaseNamespace
				}
			}
		}
	}
}

func containerHooks(o object, name string, hook func(map[string]any) error) error {
	for _, container := range podContainers(o) {
		if container["name"] == name {
			return hook(container)
		}
	}
	return fmt.Errorf("%s has no container %s", o, name)
}

// named is the item of a list of maps with that name.
func named(list any, name string) (map[string]any, error) {
	items, _ := list.([]any)
	for _, item := range items {
		if m, ok := item.(map[string]any); ok && m["name"] == name {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no item named %s", name)
}

// dispatcherHooks: resources, the header prefix, the egress allow-list, TLS
// and extra flags on the dispatcher's container, on either store. The
// certificate's Secret, mount and flags follow config/'s when it has them,
// and are shown only with tls.enabled.
func dispatcherHooks(o object, m *markers) error {
	pod := podSpec(o)
	tlsDir, certFile, keyFile := tlsDefaultDir, tlsDefaultDir+"/tls.crt", tlsDefaultDir+"/tls.key"
	err := containerHooks(o, "dispatcher", func(container map[string]any) error {
		container["resources"] = m.value(".Values.dispatcher.resources")
		var args []any
		for _, arg := range container["args"].([]any) {
			flag, value, _ := strings.Cut(arg.(string), "=")
			switch flag {
			case "--header-prefix":
				arg = "--header-prefix=" + m.scalar(".Values.dispatcher.headerPrefix")
			case "--tls-cert-file":
				certFile = value
				continue
			case "--tls-key-file":
				keyFile = value
				continue
			case "--egress-allow-cidr":
				return fmt.Errorf("config/ sets --egress-allow-cidr; the chart sets it from dispatcher.egressAllowCIDRs")
			}
			args = append(args, arg)
		}
		args = append(args, m.lines(func(indent int) string {
			return `{{- with .Values.dispatcher.egressAllowCIDRs }}
- --egress-allow-cidr={{ join "," . }}
{{- end }}
{{- if .Values.tls.enabled }}
- --tls-cert-file=` + certFile + `
- --tls-key-file=` + keyFile + `
{{- end }}
{{- with .Values.dispatcher.extraArgs }}
{{- toYaml . | nindent ` + fmt.Sprint(indent) + ` }}
{{- end }}`
		}))
		container["args"] = args
		var mounts []any
		for _, mount := range asList(container["volumeMounts"]) {
			if mount.(map[string]any)["name"] == "tls" {
				tlsDir = mount.(map[string]any)["mountPath"].(string)
				continue
			}
			mounts = append(mounts, mount)
		}
		container["volumeMounts"] = append(mounts, m.lines(func(int) string {
			return `{{- if .Values.tls.enabled }}
- name: tls
  mountPath: ` + tlsDir + `
  readOnly: true
{{- end }}`
		}))
		for _, probe := range []string{"livenessProbe", "readinessProbe", "startupProbe"} {
			if p, ok := container[probe].(map[string]any); ok {
				if get, ok := p["httpGet"].(map[string]any); ok {
					get["scheme"] = m.scalar(`ternary "HTTPS" "HTTP" .Values.tls.enabled`)
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	var volumes []any
	for _, volume := range asList(pod["volumes"]) {
		if volume.(map[string]any)["name"] != "tls" {
			volumes = append(volumes, volume)
		}
	}
	pod["volumes"] = append(volumes, m.lines(func(int) string {
		return `{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
    # Readable by the container's group (fsGroup) only.
    defaultMode: 0440
    # Not ca.key, which the manager keeps there to renew the certificate.
    items:
    - key: tls.crt
      path: tls.crt
    - key: tls.key
      path: tls.key
{{- end }}`
	}))
	return nil
}

func asList(v any) []any {
	list, _ := v.([]any)
	return list
}

// volumeClaimHooks: the embedded store's volume size and storage class.
func volumeClaimHooks(o object, m *markers) error {
	claim, err := named(asListOfMetadata(o["spec"].(map[string]any)["volumeClaimTemplates"]), "data")
	if err != nil {
		return fmt.Errorf("%s: volumeClaimTemplates: %w", o, err)
	}
	spec := claim["spec"].(map[string]any)
	spec["resources"].(map[string]any)["requests"].(map[string]any)["storage"] = m.scalar(".Values.store.pebble.volumeSize")
	spec[m.lines(func(int) string {
		return `{{- with .Values.store.pebble.storageClassName }}
storageClassName: {{ . }}
{{- end }}`
	})] = nil
	return nil
}

// asListOfMetadata lets named find volume claim templates by metadata.name.
func asListOfMetadata(v any) []any {
	out := make([]any, 0, len(asList(v)))
	for _, item := range asList(v) {
		claim := item.(map[string]any)
		if metadata, ok := claim["metadata"].(map[string]any); ok {
			claim = map[string]any{"name": metadata["name"], "spec": claim["spec"]}
		}
		out = append(out, claim)
	}
	return out
}

// networkPolicyHooks: the namespaces' labels, the cluster's CIDRs and the
// egress allow-list.
func networkPolicyHooks(o object, m *markers) error {
	replaced := map[string]int{}
	walk(map[string]any(o), func(key string, value any) (any, bool) {
		switch {
		case key == "matchLabels" && reflect.DeepEqual(value, map[string]any{"hookrelay.dev/publisher": "true"}):
			replaced["publisher"]++
			return m.value(".Values.networkPolicy.publisherNamespaceLabels"), true
		case key == "matchLabels" && reflect.DeepEqual(value, map[string]any{"hookrelay.dev/scraper": "true"}):
			replaced["scraper"]++
			return m.value(".Values.networkPolicy.scraperNamespaceLabels"), true
		case key == "except":
			replaced["except"]++
			return m.value("concat .Values.networkPolicy.podCIDRs .Values.networkPolicy.serviceCIDRs"), true
		}
		return nil, false
	})
	if replaced["except"] == 0 {
		return fmt.Errorf("no ipBlock excepts the cluster's CIDRs")
	}
	if o.name() == dispatcherName {
		if replaced["publisher"] == 0 {
			return fmt.Errorf("no rule lets in the publishers' namespaces by their label")
		}
		spec := o["spec"].(map[string]any)
		spec["egress"] = append(asList(spec["egress"]), m.lines(func(int) string {
			return `{{- range concat .Values.dispatcher.egressAllowCIDRs .Values.networkPolicy.egressAllowCIDRs }}
- to:
  - ipBlock:
      cidr: {{ . }}
{{- end }}`
		}))
	}
	return nil
}

// serviceMonitorHooks: config/ scrapes the dispatcher over TLS, trusting
// the CA of its certificate's Secret; without tls.enabled the chart's
// dispatcher serves plain HTTP, and is scraped so.
func serviceMonitorHooks(o object, m *markers) error {
	endpoints := asList(o["spec"].(map[string]any)["endpoints"])
	if len(endpoints) == 0 {
		return fmt.Errorf("no endpoints")
	}
	if o.name() != "hookrelay-dispatcher" {
		return nil
	}
	for _, endpoint := range endpoints {
		e := endpoint.(map[string]any)
		tlsConfig, ok := e["tlsConfig"].(map[string]any)
		if !ok {
			return fmt.Errorf("config/'s dispatcher ServiceMonitor has no tlsConfig; the chart expects it to trust the dispatcher's CA")
		}
		if serverName, ok := tlsConfig["serverName"].(string); ok {
			tlsConfig["serverName"] = strings.ReplaceAll(serverName, configNamespace, releaseNamespace)
		}
		if secret, ok := tlsConfig["ca"].(map[string]any)["secret"].(map[string]any); ok {
			secret["name"] = m.scalar(".Values.tls.secretName")
		}
		out, err := yaml.Marshal(map[string]any{"scheme": e["scheme"], "tlsConfig": tlsConfig})
		if err != nil {
			return err
		}
		delete(e, "scheme")
		delete(e, "tlsConfig")
		e[m.lines(func(int) string {
			return "{{- if .Values.tls.enabled }}\n" + strings.TrimRight(string(out), "\n") + "\n{{- else }}\nscheme: http\n{{- end }}"
		})] = nil
	}
	return nil
}

// walk calls replace on every map entry under v, depth first; where it
// answers true the entry takes the returned value.
func walk(v any, replace func(key string, value any) (any, bool)) {
	switch v := v.(type) {
	case map[string]any:
		for key, value := range v {
			if replacement, ok := replace(key, value); ok {
				v[key] = replacement
				continue
			}
			walk(value, replace)
		}
	case []any:
		for _, item := range v {
			walk(item, replace)
		}
	}
}

// deepCopy copies decoded YAML.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for key, value := range v {
			out[key] = deepCopy(value)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, item := range v {
			out[i] = deepCopy(item)
		}
		return out
	}
	return v
}

// Package monitoring reads the Prometheus Operator objects of
// config/prometheus and the Grafana dashboards of config/grafana, and names
// the metrics their queries use, so that tests can check them against what
// the binaries export.
package monitoring

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Objects are the Prometheus Operator objects of a folder.
type Objects struct {
	ServiceMonitors []monitoringv1.ServiceMonitor
	PrometheusRules []monitoringv1.PrometheusRule
}

// Load decodes every document of the folder's *.yaml files but
// kustomization.yaml strictly into the monitoring.coreos.com/v1 types: an
// unknown field, or a kind other than ServiceMonitor and PrometheusRule, is
// an error naming the file.
func Load(dir string) (Objects, error) {
	var objects Objects
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return objects, err
	}
	for _, file := range files {
		if filepath.Base(file) == "kustomization.yaml" {
			continue
		}
		if err := objects.load(file); err != nil {
			return objects, fmt.Errorf("%s: %w", file, err)
		}
	}
	return objects, nil
}

func (o *Objects) load(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		document, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(document, &meta); err != nil {
			return err
		}
		if meta.APIVersion != monitoringv1.SchemeGroupVersion.String() {
			return fmt.Errorf("apiVersion %q is not %s", meta.APIVersion, monitoringv1.SchemeGroupVersion)
		}
		switch meta.Kind {
		case monitoringv1.ServiceMonitorsKind:
			var monitor monitoringv1.ServiceMonitor
			if err := yaml.UnmarshalStrict(document, &monitor); err != nil {
				return err
			}
			o.ServiceMonitors = append(o.ServiceMonitors, monitor)
		case monitoringv1.PrometheusRuleKind:
			var rule monitoringv1.PrometheusRule
			if err := yaml.UnmarshalStrict(document, &rule); err != nil {
				return err
			}
			o.PrometheusRules = append(o.PrometheusRules, rule)
		default:
			return fmt.Errorf("kind %q is not a ServiceMonitor or a PrometheusRule", meta.Kind)
		}
	}
}

// Expressions are the PromQL expressions of the rules, by "rule <name>".
func (o Objects) Expressions() map[string]string {
	out := map[string]string{}
	for _, rule := range o.PrometheusRules {
		for _, group := range rule.Spec.Groups {
			for _, r := range group.Rules {
				out["rule "+cmp.Or(r.Alert, r.Record)] = r.Expr.String()
			}
		}
	}
	return out
}

// DashboardExpressions are the PromQL expressions ("expr" of the panels'
// targets, at any depth) of the folder's *.json dashboards, by
// "<file> <panel title>"; a missing folder has none.
func DashboardExpressions(dir string) (map[string]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		var dashboard any
		if err := json.Unmarshal(data, &dashboard); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		collectExpressions(dashboard, filepath.Base(file), out)
	}
	return out, nil
}

func collectExpressions(node any, where string, out map[string]string) {
	switch value := node.(type) {
	case map[string]any:
		if title, ok := value["title"].(string); ok {
			where = strings.SplitN(where, " ", 2)[0] + " " + title
		}
		if expr, ok := value["expr"].(string); ok && strings.TrimSpace(expr) != "" {
			key := where
			for i := 2; out[key] != ""; i++ {
				key = fmt.Sprintf("%s #%d", where, i)
			}
			out[key] = expr
		}
		for _, child := range value {
			collectExpressions(child, where, out)
		}
	case []any:
		for _, child := range value {
			collectExpressions(child, where, out)
		}
	}
}

// PromQL's words that are not metric names, where a name may stand.
var keywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "bool": true,
	"and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true, "start": true, "end": true,
}

var (
	// Strings first: they may hold braces, brackets and names.
	stringLiterals = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	// Label matchers, ranges and subqueries.
	bracketed = regexp.MustCompile(`\{[^{}]*\}|\[[^\[\]]*\]`)
	// by (...), without (...), on (...), ignoring (...), group_left (...),
	// group_right (...): label lists.
	labelLists = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	// Identifiers, with what precedes ($ of a Grafana variable) and
	// follows (an opening parenthesis makes a function).
	identifiers = regexp.MustCompile(`(\$?)([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?`)
	// Numbers, durations and hexadecimal literals start with a digit or a
	// dot; they never match an identifier's first character, except
	// exponents, which follow a digit.
	numberTail = regexp.MustCompile(`[0-9.]$`)
)

// MetricNames names the metrics a PromQL expression selects, sorted and
// once each. It is a tokenizer, not a parser: it drops strings, label
// matchers, ranges and label lists, then keeps the identifiers that are not
// functions, keywords or Grafana variables. (Prometheus' own parser lives
// in a module that brings much of Prometheus with it.)
func MetricNames(expr string) []string {
	text := stringLiterals.ReplaceAllString(expr, `""`)
	text = labelLists.ReplaceAllString(text, " ")
	for {
		stripped := bracketed.ReplaceAllString(text, " ")
		if stripped == text {
			break
		}
		text = stripped
	}
	var names []string
	for _, match := range identifiers.FindAllStringSubmatchIndex(text, -1) {
		dollar, name, call := text[match[2]:match[3]], text[match[4]:match[5]], match[6] >= 0
		if dollar != "" || call || keywords[strings.ToLower(name)] || numberTail.MatchString(text[:match[0]]) {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Exported reports whether a name a query uses is one of the scraped
// families, a histogram's or summary's _bucket, _sum or _count series
// named after its family, or Prometheus' own up.
func Exported(name string, families map[string]bool) bool {
	if name == "up" || families[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if family, ok := strings.CutSuffix(name, suffix); ok && families[family] {
			return true
		}
	}
	return false
}

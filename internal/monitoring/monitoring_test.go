package monitoring

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"

	"github.com/hookrelay/hookrelay/internal/testenv"
)

func TestMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (namespace) (hookrelay_endpoints_disabled) > 0`: {"hookrelay_endpoints_disabled"},
		`histogram_quantile(0.99, sum by (le, namespace) (rate(hookrelay_publish_to_success_seconds_bucket{namespace=~"$namespace"}[$__rate_interval])))`: {
			"hookrelay_publish_to_success_seconds_bucket"},
		`hookrelay_dispatcher_ready == 0 or up{service="hookrelay-dispatcher"} == 0`:                                   {"hookrelay_dispatcher_ready", "up"},
		`a / ignoring(code) group_left sum without (pod) (b offset 5m) * 1e3 + c[5m:1m]`:                               {"a", "b", "c"},
		`topk(5, max by (namespace) (hookrelay_queue_depth{state!="{x}"}))`:                                            {"hookrelay_queue_depth"},
		`sum(rate(x_total[5m])) / (sum(rate(y_total[5m])) + sum(rate(x_total[5m]))) > bool 0.05 unless on() vector(1)`: {"x_total", "y_total"},
	} {
		if got := MetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("MetricNames(%s) = %q, want %q", expr, got, want)
		}
	}
}

// TestConfigDecodesStrictly: config/prometheus holds ServiceMonitors for
// both binaries and the alerts, each with a runbook, in the Prometheus
// Operator's own types.
func TestConfigDecodesStrictly(t *testing.T) {
	objects, err := Load(filepath.Join(testenv.RepoRoot(), "config", "prometheus"))
	if err != nil {
		t.Fatal(err)
	}
	ports := map[string]string{}
	for _, monitor := range objects.ServiceMonitors {
		for _, endpoint := range monitor.Spec.Endpoints {
			if !strings.EqualFold(endpoint.Scheme.String(), string(monitoringv1.SchemeHTTPS)) || endpoint.BearerTokenFile == "" { //nolint:staticcheck // the ServiceAccount's token, as kubebuilder's scaffold reads it
				t.Errorf("ServiceMonitor %s: endpoint %s is not scraped over HTTPS with Prometheus' token", monitor.Name, endpoint.Port)
			}
			ports[monitor.Spec.Selector.MatchLabels["app.kubernetes.io/component"]] = endpoint.Port
		}
	}
	if want := map[string]string{"dispatcher": "https", "manager": "metrics"}; !maps.Equal(ports, want) {
		t.Errorf("ServiceMonitor ports by component: %v, want %v", ports, want)
	}
	alerts := map[string]bool{}
	for _, rule := range objects.PrometheusRules {
		for _, group := range rule.Spec.Groups {
			for _, r := range group.Rules {
				alerts[r.Alert] = true
				if r.Annotations["runbook_url"] == "" {
					t.Errorf("alert %s has no runbook_url", r.Alert)
				}
			}
		}
	}
	for _, alert := range []string{"HookrelayEndpointAutoDisabled", "HookrelayOldestPendingTooOld", "HookrelayPublishErrorRatioHigh",
		"HookrelayDispatcherNotReady", "HookrelayStoreDiskFilling"} {
		if !alerts[alert] {
			t.Errorf("alert %s is missing", alert)
		}
	}
}

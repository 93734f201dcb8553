// Package selfmon holds fleetwatch's alerts about itself: the rules a Prometheus that scrapes
// fleetwatch (the cluster install's ServiceMonitor) evaluates, delivered as the install's
// PrometheusRule (deploy/kubernetes/base/prometheusrule.yaml, generated from here; a test keeps
// it current). They read only fleetwatch's own /metrics, by the names its packages define.
package selfmon

import (
	"bytes"
	"fmt"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"gopkg.in/yaml.v3"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/hooks"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/remediate"
	"github.com/fleetwatch/fleetwatch/rules/export"
)

// Job is the job label of fleetwatch's own series: the ServiceMonitor's Service name.
const Job = "fleetwatch"

// The alerts' names.
const (
	AlertDown                 = "FleetwatchDown"
	AlertConfigReloadFailed   = "FleetwatchConfigReloadFailed"
	AlertRemoteWriteRejected  = "FleetwatchRemoteWriteRejected"
	AlertRemoteWriteOverload  = "FleetwatchRemoteWriteOverloaded"
	AlertNotificationsFailing = "FleetwatchIncidentNotificationsFailing"
	AlertOutboxGrowing        = "FleetwatchIncidentOutboxNotDraining"
	AlertIncidentsSlow        = "FleetwatchIncidentsSlow"
	AlertRemediationLeaders   = "FleetwatchRemediationLeaderNotOne"
	AlertHookDeliveries       = "FleetwatchHookDeliveriesFailing"
)

// ManifestName is the PrometheusRule's metadata.name.
const ManifestName = "fleetwatch"

// Groups are fleetwatch's alerts about itself.
func Groups() []rulefmt.RuleGroup {
	job := fmt.Sprintf(`job=%q`, Job)
	d := func(x time.Duration) model.Duration { return model.Duration(x) }
	alert := func(name, expr string, forDur time.Duration, severity, summary, description string) rulefmt.Rule {
		return rulefmt.Rule{
			Alert: name, Expr: expr, For: d(forDur),
			Labels: map[string]string{"severity": severity},
			Annotations: map[string]string{
				"summary":     summary,
				"description": description,
			},
		}
	}
	return []rulefmt.RuleGroup{{
		Name: "fleetwatch",
		Rules: []rulefmt.Rule{
			alert(AlertDown, fmt.Sprintf(`up{%s} == 0`, job), 5*time.Minute, "critical",
				"fleetwatch {{ $labels.instance }} is down.",
				"Prometheus has not scraped fleetwatch {{ $labels.instance }} for 5 minutes: the fleet's metrics, alerts and incidents may not be taken in."),
			alert(AlertConfigReloadFailed, fmt.Sprintf(`max_over_time(%s{%s}[5m]) == 0`, config.MetricLastReloadSuccessful, job), 10*time.Minute, "warning",
				"fleetwatch {{ $labels.instance }} could not load its configuration.",
				"The last configuration reload failed; fleetwatch runs the configuration it had. Its log says which field was wrong."),
			alert(AlertRemoteWriteRejected, fmt.Sprintf(`sum by (instance, cluster, reason) (rate(%s{%s}[5m])) > 0`, collector.MetricRemoteWriteRejected, job), 15*time.Minute, "warning",
				"fleetwatch rejects remote writes from {{ $labels.cluster }} ({{ $labels.reason }}).",
				"fleetwatch {{ $labels.instance }} has rejected remote-write requests of cluster {{ $labels.cluster }} for 15 minutes ({{ $labels.reason }}): those samples are not in the view."),
			alert(AlertRemoteWriteOverload, fmt.Sprintf(`sum by (instance) (rate(%s{%s}[5m])) > 0`, collector.MetricRemoteWriteOverloaded, job), 15*time.Minute, "warning",
				"fleetwatch {{ $labels.instance }} answers remote writes with 429.",
				"The in-flight byte limit (ingest.max_inflight_bytes) has been reached for 15 minutes: members retry, and their queues grow. Give fleetwatch more CPU, or raise the limit if memory allows."),
			alert(AlertNotificationsFailing, fmt.Sprintf(`sum by (instance, alertmanager) (rate(%s{%s,result="error"}[5m])) > 0`, correlate.MetricNotifications, job), 10*time.Minute, "critical",
				"fleetwatch cannot deliver incidents to {{ $labels.alertmanager }}.",
				"Posting incidents to Alertmanager {{ $labels.alertmanager }} has failed for 10 minutes: nobody is paged for new incidents. They wait in fleetwatch's outbox and are sent once it answers."),
			alert(AlertOutboxGrowing, fmt.Sprintf(`min_over_time(%s{%s}[15m]) > 0 and deriv(%[1]s{%[2]s}[15m]) >= 0`, correlate.MetricOutbox, job), 15*time.Minute, "warning",
				"fleetwatch {{ $labels.instance }}'s incident outbox is not draining.",
				"Incident states have waited for Alertmanager for 30 minutes and their number does not fall."),
			alert(AlertIncidentsSlow, fmt.Sprintf(`histogram_quantile(0.99, sum by (instance, le) (rate(%s_bucket{%s}[10m]))) > 30`, correlate.MetricAlertToIncident, job), 15*time.Minute, "warning",
				"fleetwatch {{ $labels.instance }} takes over 30 s to put alerts into incidents.",
				"The 99th percentile of the time from an alert arriving to its incident has been above 30 s for 15 minutes (correlate's evaluation duration shows why)."),
			alert(AlertRemediationLeaders, fmt.Sprintf(`sum(%s{%s}) != 1 and count(%[1]s{%[2]s}) > 0`, remediate.MetricLeader, job), 5*time.Minute, "critical",
				"{{ $value }} fleetwatch processes act on remediations, not one.",
				"With remediation on, exactly one fleetwatch process acts. 0: none holds the Lease (remediation.leader_election), and nothing is remediated; more than 1: two act, which the Lease should make impossible."),
			alert(AlertHookDeliveries, fmt.Sprintf(`sum by (instance, receiver) (rate(%s{%s,result="failure"}[5m])) > 0 and sum by (instance, receiver) (rate(%[1]s{%[2]s,result="success"}[5m])) == 0`, hooks.MetricDeliveries, job), 15*time.Minute, "warning",
				"fleetwatch cannot deliver on-call events to {{ $labels.receiver }}.",
				"Every delivery to hook receiver {{ $labels.receiver }} has failed for 15 minutes; events wait until max_event_age, then are dropped."),
		},
	}}
}

// RuleFile is Groups as a Prometheus rule file.
func RuleFile() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(rulefmt.RuleGroups{Groups: Groups()}); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Manifest is Groups as the cluster install's PrometheusRule.
func Manifest() ([]byte, error) {
	rf, err := RuleFile()
	if err != nil {
		return nil, err
	}
	b, _, err := export.Manifest([]export.File{{Name: "fleetwatch-self.yml", Content: rf}}, export.Options{
		Name:      ManifestName,
		Labels:    map[string]string{"app.kubernetes.io/component": "server"},
		Source:    "fleetwatch's alerts about itself (rules/selfmon)",
		Generator: "`go test ./rules/selfmon -update`",
	})
	return b, err
}

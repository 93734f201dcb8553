package dashboards

import (
	"strconv"

	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/hooks"
	"github.com/fleetwatch/fleetwatch/internal/access"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/promqlengine"
	fwquery "github.com/fleetwatch/fleetwatch/query"
	"github.com/fleetwatch/fleetwatch/remediate"
	"github.com/fleetwatch/fleetwatch/rules/pack"
)

// reporting is `or 0 * <a series every fleetwatch exports>`: a sum over series that exist only
// while there is something to count (fleetwatch resets its incident gauge) shows 0 rather than
// no data, but only while fleetwatch is being scraped, so a fleetwatch that is down does not
// look like a quiet one.
const reporting = ` or 0 * max(` + config.MetricLastReloadSuccessful + `{` + jf + `})`

// incidents: what the correlation engine does, from fleetwatch's own metrics.
func incidents(e *env) *dashboard.DashboardBuilder {
	b := board(UIDIncidents, titleIncidents,
		"fleetwatch's correlation and remediation engines from their own metrics, on a Prometheus that scrapes fleetwatch's /metrics (data source and job variables): open incidents, alerts taken in, delivery to Alertmanager, remediations and their guards.",
		SourceMetrics).
		WithVariable(jobVar())

	b.WithRow(dashboard.NewRowBuilder("Incidents"))
	b.WithPanel(statPanel("Open incidents", "Incidents open or acknowledged now.", 6, 5).
		WithTarget(instant("A", `sum(fleetwatch_correlate_incidents{`+jf+`})`+reporting, "")).
		Thresholds(thresholds(green, step{1, orange})))
	b.WithPanel(statPanel("Open incidents by severity", "Incidents open or acknowledged now, by the highest severity of their alerts.", 10, 5).
		WithTarget(instant("A", `sum by (severity) (fleetwatch_correlate_incidents{`+jf+`})`, "{{severity}}")).
		TextMode(common.BigValueTextModeValueAndName).Thresholds(thresholds(text)))
	b.WithPanel(statPanel("Undelivered incident states", "Incident states in the outbox, not yet accepted by every Alertmanager; they survive a restart and are retried with backoff.", 8, 5).
		WithTarget(instant("A", `sum(`+correlate.MetricOutbox+`{`+jf+`})`, "")).
		Thresholds(thresholds(green, step{1, orange})))
	b.WithPanel(timeSeries("Open incidents by severity and scope", "Open incidents over time; scope fleet is a problem shared by several clusters (a bad rollout), scope cluster one cluster's.", 12, 8).
		WithTarget(query("A", `sum by (severity, scope) (fleetwatch_correlate_incidents{`+jf+`})`, "{{severity}} {{scope}}")).
		Min(0).Decimals(0))
	b.WithPanel(timeSeries("Alerts taken in", "Alerts the correlation engine takes in a second, by source: fleetwatch's own rules, member clusters' Prometheus (Alertmanager API v2) and Alertmanagers (webhook). Firing alerts are resent regularly, so this is a rate of sends, not of new alerts.", 12, 8).
		WithTarget(query("A", `sum by (source) (rate(`+correlate.MetricAlertsReceived+`{`+jf+`}[$__rate_interval]))`, "{{source}}")).
		Unit("short").AxisLabel("alerts / s").Min(0))

	b.WithPanel(timeSeries("Incidents opened and resolved", "Incidents opened and resolved an hour, by how they resolved: cleared (their alerts stayed away for correlate.resolve_after), merged (into a fleet-wide incident) or manual (through the API).", 12, 8).
		WithTarget(query("A", `sum(increase(fleetwatch_correlate_incidents_opened_total{`+jf+`}[1h]))`, "opened")).
		WithTarget(query("B", `sum by (how) (increase(fleetwatch_correlate_incidents_resolved_total{`+jf+`}[1h]))`, "resolved {{how}}")).
		Unit("short").AxisLabel("incidents / h").Min(0))
	b.WithPanel(timeSeries("Time to resolve", "How long incidents that resolved in the last 6 hours were open: median and 90th percentile.", 12, 8).
		WithTarget(query("A", `histogram_quantile(0.5, sum by (le) (increase(fleetwatch_correlate_incident_duration_seconds_bucket{`+jf+`}[6h])))`, "p50")).
		WithTarget(query("B", `histogram_quantile(0.9, sum by (le) (increase(fleetwatch_correlate_incident_duration_seconds_bucket{`+jf+`}[6h])))`, "p90")).
		Unit("s").Min(0))

	b.WithRow(dashboard.NewRowBuilder("Delivery"))
	b.WithPanel(timeSeries("Incident notifications to Alertmanager", "Incident states posted to each Alertmanager a second, by result.", 12, 8).
		WithTarget(query("A", `sum by (alertmanager, result) (rate(`+correlate.MetricNotifications+`{`+jf+`}[$__rate_interval]))`, "{{alertmanager}} {{result}}")).
		Unit("short").AxisLabel("states / s").Min(0))
	b.WithPanel(timeSeries("Alert to incident", "Time from an alert being taken in to the evaluation that put it in an incident.", 12, 8).
		WithTarget(query("A", `histogram_quantile(0.5, sum by (le) (rate(`+correlate.MetricAlertToIncident+`_bucket{`+jf+`}[$__rate_interval])))`, "p50")).
		WithTarget(query("B", `histogram_quantile(0.99, sum by (le) (rate(`+correlate.MetricAlertToIncident+`_bucket{`+jf+`}[$__rate_interval])))`, "p99")).
		Unit("s").Min(0))
	b.WithPanel(timeSeries("Evaluation duration", "How long the correlation's evaluations take: reading the topology, regrouping what changed, storing the incidents that changed. An alert waits for about two of them.", 12, 8).
		WithTarget(query("A", `histogram_quantile(0.5, sum by (le) (rate(`+correlate.MetricEvaluationDuration+`_bucket{`+jf+`}[$__rate_interval])))`, "p50")).
		WithTarget(query("B", `histogram_quantile(0.99, sum by (le) (rate(`+correlate.MetricEvaluationDuration+`_bucket{`+jf+`}[$__rate_interval])))`, "p99")).
		Unit("s").Min(0))

	b.WithRow(dashboard.NewRowBuilder("Remediation"))
	b.WithPanel(statPanel("Waiting for approval", "Remediations waiting for an operator with the operate role (remediate/README.md).", 6, 5).
		WithTarget(instant("A", `sum(`+remediate.MetricActive+`{`+jf+`, state="`+remediate.StateWaiting+`"})`+reporting, "")).
		Thresholds(thresholds(green, step{1, orange})))
	b.WithPanel(statPanel("Held or inconclusive", "Remediations a guard holds, or whose verification had no data and waits for an operator.", 6, 5).
		WithTarget(instant("A", `sum(`+remediate.MetricActive+`{`+jf+`, state=~"`+remediate.StateHeld+`|`+remediate.StateInconclusive+`"})`+reporting, "")).
		Thresholds(thresholds(green, step{1, orange})))
	b.WithPanel(statPanel("In flight", "Remediation ops that acted and are not verified yet: they count against the blast-radius budget.", 6, 5).
		WithTarget(instant("A", `sum(`+remediate.MetricInFlight+`{`+jf+`})`, "")).
		Thresholds(thresholds(text)))
	b.WithPanel(statPanel("Budget left", "How many more nodes, workloads or clusters may be under remediation at once before the blast-radius budget holds new actions (remediation.budget).", 6, 5).
		WithTarget(instant("A", `min by (resource) (`+remediate.MetricBudgetRemaining+`{`+jf+`})`, "{{resource}}")).
		TextMode(common.BigValueTextModeValueAndName).Thresholds(thresholds(orange, step{1, green})))
	b.WithPanel(timeSeries("Actions by result", "Remediation op attempts an hour, by action and result: done, dry_run, blocked (a PodDisruptionBudget refused an eviction), error (the API call failed; tried again), failed (verification failed at the timeout).", 12, 8).
		WithTarget(query("A", `sum by (action, result) (increase(`+remediate.MetricActions+`{`+jf+`}[1h]))`, "{{action}} {{result}}")).
		Unit("short").AxisLabel("actions / h").Min(0))
	b.WithPanel(timeSeries("Recovery time", "From an incident's opening to the last verification of its remediation, for remediations that succeeded in the last 6 hours: median and 90th percentile. fleetwatch is built for under 15 minutes.", 12, 8).
		WithTarget(query("A", `histogram_quantile(0.5, sum by (le) (increase(`+remediate.MetricRTO+`_bucket{`+jf+`}[6h])))`, "p50")).
		WithTarget(query("B", `histogram_quantile(0.9, sum by (le) (increase(`+remediate.MetricRTO+`_bucket{`+jf+`}[6h])))`, "p90")).
		Unit("s").Min(0))
	b.WithPanel(timeSeries("Guard holds", "Times a guard held a remediation op an hour, by guard: pause, suppression, partition, budget, rate_limit, lost (a failover whose cluster is not lost), capacity (a failover refused), rpo (a failover waiting for an approval).", 12, 8).
		WithTarget(query("A", `sum by (guard) (increase(`+remediate.MetricHolds+`{`+jf+`}[1h]))`, "{{guard}}")).
		Unit("short").AxisLabel("holds / h").Min(0))
	b.WithPanel(timeSeries("Remediations ended", "Remediations that ended an hour, by playbook and final state.", 12, 8).
		WithTarget(query("A", `sum by (playbook, state) (increase(`+remediate.MetricRemediations+`{`+jf+`}[1h]))`, "{{playbook}} {{state}}")).
		Unit("short").AxisLabel("remediations / h").Min(0))
	b.WithPanel(statPanel("Processes acting", "fleetwatch processes that act on remediations: 1 is right; 0 means no process holds the Lease (remediation.leader_election), more than 1 that two act.", 6, 5).
		WithTarget(instant("A", `sum(`+remediate.MetricLeader+`{`+jf+`})`+reporting, "")).
		Thresholds(thresholds(red, step{1, green}, step{2, red})))
	return b
}

// self: fleetwatch itself, from its own metrics.
func self(e *env) *dashboard.DashboardBuilder {
	silent := strconv.FormatFloat(e.silentAfter(), 'g', -1, 64)
	b := board(UIDSelf, titleSelf,
		"fleetwatch itself from its own metrics, on a Prometheus that scrapes fleetwatch's /metrics (data source and job variables): ingest per cluster, rejected writes, queries, rule evaluation, queues.",
		SourceMetrics).
		WithVariable(jobVar()).
		WithVariable(clusterVar(SourceMetrics))

	b.WithRow(dashboard.NewRowBuilder("Health"))
	b.WithPanel(statPanel("Instances up", "fleetwatch instances the Prometheus scrapes successfully.", 4, 4).
		WithTarget(instant("A", `sum(up{`+jf+`})`, "")).
		Thresholds(thresholds(red, step{1, green})))
	b.WithPanel(statPanel("Configuration", "Whether the last configuration reload (SIGHUP, POST /-/reload) succeeded; a failed one keeps the previous configuration running.", 4, 4).
		WithTarget(instant("A", `min(`+config.MetricLastReloadSuccessful+`{`+jf+`})`, "")).
		Mappings([]dashboard.ValueMapping{textMapping(map[string][2]string{"0": {"reload failed", red}, "1": {"loaded", green}})}).
		Thresholds(thresholds(red, step{1, green})))
	b.WithPanel(statPanel("Silent clusters", "Clusters fleetwatch stored nothing from for longer than rules.pack.silent_after ("+e.t.SilentAfter.String()+").", 4, 4).
		WithTarget(instant("A", `sum(time() - max by (cluster) (fleetwatch_cluster_last_ingest_timestamp_seconds{`+jf+`, `+cf+`}) > bool `+silent+`)`, "")).
		Thresholds(thresholds(green, step{1, e.color(pack.AlertClusterSilent)})))
	b.WithPanel(statPanel("Held alerts", "Firing alerts held because their cluster's data went missing rather than because their condition cleared (rules/README.md, Completeness).", 4, 4).
		WithTarget(instant("A", `sum(fleetwatch_rules_held_alerts{`+jf+`})`, "")).
		Thresholds(thresholds(green, step{1, orange})))
	b.WithPanel(statPanel("Head series", "Series in the TSDB's head block: the fleet's active series.", 4, 4).
		WithTarget(instant("A", `sum(prometheus_tsdb_head_series{`+jf+`})`, "")).
		Thresholds(thresholds(text)))
	b.WithPanel(statPanel("Resident memory", "Resident memory of the fleetwatch processes.", 4, 4).
		WithTarget(instant("A", `sum(process_resident_memory_bytes{`+jf+`})`, "")).
		Unit("bytes").Thresholds(thresholds(text)))

	b.WithRow(dashboard.NewRowBuilder("Ingest"))
	b.WithPanel(timeSeries("Samples stored / s", "Samples and histograms stored a second per cluster, from remote write and from federation.", 12, 8).
		WithTarget(query("A", `
			sum by (cluster) (
			    rate(fleetwatch_remote_write_samples_total{`+jf+`, `+cf+`, type!="exemplar"}[$__rate_interval])
			  or
			    rate(fleetwatch_federate_samples_total{`+jf+`, `+cf+`}[$__rate_interval])
			)`, "{{cluster}}")).
		Unit("short").AxisLabel("samples / s").Min(0))
	b.WithPanel(thresholdLine(timeSeries("Data age", "Seconds since fleetwatch last stored data from each cluster. "+pack.AlertClusterSilent+" fires above the dashed line, rules.pack.silent_after.", 12, 8)).
		WithTarget(query("A", `time() - max by (cluster) (fleetwatch_cluster_last_ingest_timestamp_seconds{`+jf+`, `+cf+`})`, "{{cluster}}")).
		Unit("s").Min(0).
		Thresholds(thresholds(green, step{above(e.silentAfter()), e.color(pack.AlertClusterSilent)})))
	b.WithPanel(timeSeries("Rejected writes",
		"Remote-write requests rejected whole (400: nothing of the request was stored) and federation scrapes discarded whole, by cluster and reason; requests without valid credentials (401); requests refused because too many bytes were in flight (429, the sender retries).", 12, 8).
		WithTarget(query("A", `
			sum by (cluster, reason) (
			    rate(fleetwatch_remote_write_rejected_requests_total{`+jf+`, `+cf+`}[$__rate_interval])
			  or
			    rate(fleetwatch_federate_rejected_scrapes_total{`+jf+`, `+cf+`}[$__rate_interval])
			)`, "{{cluster}} {{reason}}")).
		// A request whose credentials name no cluster is refused by the access layer.
		WithTarget(query("B", `sum(rate(fleetwatch_http_requests_refused_total{`+jf+`, endpoint="`+access.EndpointWrite+`", reason="`+access.ReasonUnauthenticated+`"}[$__rate_interval]))`, "unauthenticated (401)")).
		WithTarget(query("C", `sum(rate(fleetwatch_remote_write_overloaded_total{`+jf+`}[$__rate_interval]))`, "overloaded (429)")).
		Unit("reqps").Min(0))
	b.WithPanel(timeSeries("Remote-write requests by code", "Remote-write requests a second from the selected clusters, by HTTP status code.", 12, 8).
		WithTarget(query("A", `sum by (code) (rate(fleetwatch_remote_write_requests_total{`+jf+`, `+cf+`}[$__rate_interval]))`, "{{code}}")).
		Unit("reqps").Min(0))

	b.WithRow(dashboard.NewRowBuilder("Queries"))
	b.WithPanel(timeSeries("Query latency (Prometheus engine)",
		"Quantiles of the evaluation time of the queries Prometheus's engine answers: every query with query.engine: prometheus; with the default query.engine: thanos, only those handed to it (next panel). fleetwatch does not time the queries the Thanos engine answers yet.", 12, 8).
		WithTarget(query("A", `max by (quantile) (prometheus_engine_query_duration_seconds{`+jf+`, slice="inner_eval"})`, "q{{quantile}}")).
		Unit("s").Min(0))
	b.WithPanel(timeSeries("Queries handed to Prometheus's engine", "Range queries a second answered by Prometheus's engine instead of the Thanos engine: those the Thanos engine does not implement (fallbacks), and those with a range-vector window wider than "+strconv.Itoa(promqlengine.WideWindowSteps)+" steps (wide windows) and bare selectors, both of which Prometheus's engine evaluates faster. Instant queries all run on Prometheus's engine and are not counted.", 12, 8).
		WithTarget(query("A", `sum(rate(`+promqlengine.MetricFallbacks+`{`+jf+`}[$__rate_interval]))`, "fallbacks")).
		WithTarget(query("B", `sum(rate(`+promqlengine.MetricWideWindows+`{`+jf+`}[$__rate_interval]))`, "wide windows")).
		WithTarget(query("C", `sum(rate(`+promqlengine.MetricSelectors+`{`+jf+`}[$__rate_interval]))`, "bare selectors")).
		Unit("short").AxisLabel("queries / s").Min(0))
	b.WithPanel(timeSeries("Result cache hit ratio",
		"Share of range queries whose pieces old enough to cache all came from the result cache (hit among hit and miss). A range query is cut into pieces of query.result_cache.split_interval; pieces younger than query.result_cache.freshness are computed every time and do not count.", 12, 8).
		WithTarget(query("A", `
			    sum(rate(`+fwquery.MetricResultCacheRequests+`{`+jf+`, result="`+fwquery.CacheHit+`"}[$__rate_interval]))
			  /
			    sum(rate(`+fwquery.MetricResultCacheRequests+`{`+jf+`, result=~"`+fwquery.CacheHit+`|`+fwquery.CacheMiss+`"}[$__rate_interval]))`, "hit ratio")).
		Unit("percentunit").Min(0).Max(1))
	b.WithPanel(timeSeries("Range queries by cache result", "Range queries a second by what the result cache did: hit (every piece old enough to cache came from it), miss (some were computed and kept), uncacheable (nothing old enough, unaligned to the step, or depending on the range's start or end); and how often late samples emptied the cache.", 12, 8).
		WithTarget(query("A", `sum by (result) (rate(`+fwquery.MetricResultCacheRequests+`{`+jf+`}[$__rate_interval]))`, "{{result}}")).
		WithTarget(query("B", `sum(rate(`+fwquery.MetricResultCacheInvalidations+`{`+jf+`}[$__rate_interval]))`, "emptied by late samples")).
		Unit("short").AxisLabel("queries / s").Min(0))

	b.WithRow(dashboard.NewRowBuilder("Rules and queues"))
	b.WithPanel(timeSeries("Rule group evaluation time", "How long each rule group's last evaluation took; it must stay well below rules.evaluation_interval.", 12, 8).
		WithTarget(query("A", `max by (rule_group) (prometheus_rule_group_last_duration_seconds{`+jf+`})`, "{{rule_group}}")).
		Unit("s").Min(0))
	b.WithPanel(timeSeries("Rule evaluation failures and missed iterations", "Rule evaluations that failed, and evaluations skipped because the previous one ran too long, a second.", 12, 8).
		WithTarget(query("A", `sum by (rule_group) (rate(prometheus_rule_evaluation_failures_total{`+jf+`}[$__rate_interval]))`, "{{rule_group}} failed")).
		WithTarget(query("B", `sum by (rule_group) (rate(prometheus_rule_group_iterations_missed_total{`+jf+`}[$__rate_interval]))`, "{{rule_group}} missed")).
		Unit("short").Min(0))
	b.WithPanel(timeSeries("Queue depth", "Alerts of the rules waiting to be sent to Alertmanager, and incident states waiting in the correlation engine's outbox.", 12, 8).
		WithTarget(query("A", `sum(prometheus_notifications_queue_length{`+jf+`})`, "rule alerts to Alertmanager")).
		WithTarget(query("B", `sum(`+correlate.MetricOutbox+`{`+jf+`})`, "incident states to Alertmanager")).
		Min(0).Decimals(0))
	b.WithPanel(timeSeries("Dropped alert notifications", "Alerts of the rules dropped a second: the queue to Alertmanager was full or every Alertmanager failed.", 12, 8).
		WithTarget(query("A", `sum(rate(prometheus_notifications_dropped_total{`+jf+`}[$__rate_interval]))`, "dropped")).
		Unit("short").Min(0))

	b.WithRow(dashboard.NewRowBuilder("Placement"))
	b.WithPanel(timeSeries("Placement score", "Each cluster's placement score (0-100) for a reference replica of 100m CPU and 128Mi with the configured weights; 0 while a hard filter (stale data, unhealthy, no room below the ceiling) rules it out. schedule/README.md.", 8, 8).
		WithTarget(query("A", `max by (cluster) (fleetwatch_cluster_placement_score{`+jf+`, `+cf+`})`, "{{cluster}}")).
		Min(0).Max(100))
	b.WithPanel(timeSeries("Free CPU below the ceiling", "CPU cores placement may still put on each cluster before its requests reach min(1 - schedule.headroom, rules.pack.saturation_ratio) of allocatable.", 8, 8).
		WithTarget(query("A", `max by (cluster) (fleetwatch_cluster_free_cpu_cores{`+jf+`, `+cf+`})`, "{{cluster}}")).
		Unit("short").AxisLabel("cores").Min(0))
	b.WithPanel(timeSeries("Placement and what-if answers", "Answers a second of POST /api/v1/placements and /api/v1/whatif, and clusters that pass every workload-independent filter.", 8, 8).
		WithTarget(query("A", `sum by (kind) (rate(fleetwatch_schedule_decision_duration_seconds_count{`+jf+`}[$__rate_interval]))`, "{{kind}} / s")).
		WithTarget(query("B", `sum(max by (cluster) (fleetwatch_cluster_schedulable{`+jf+`, `+cf+`}))`, "schedulable clusters")).
		Min(0))

	b.WithRow(dashboard.NewRowBuilder("Process"))
	b.WithPanel(timeSeries("CPU", "CPU used by each fleetwatch process, in cores.", 8, 8).
		WithTarget(query("A", `sum by (instance) (rate(process_cpu_seconds_total{`+jf+`}[$__rate_interval]))`, "{{instance}}")).
		Unit("short").AxisLabel("cores").Min(0))
	b.WithPanel(timeSeries("Memory", "Resident memory of each fleetwatch process.", 8, 8).
		WithTarget(query("A", `sum by (instance) (process_resident_memory_bytes{`+jf+`})`, "{{instance}}")).
		Unit("bytes").Min(0))
	b.WithPanel(timeSeries("Samples appended", "Samples appended to the TSDB a second: remote write, federation, recording rules and alert state.", 8, 8).
		WithTarget(query("A", `sum by (instance) (rate(prometheus_tsdb_head_samples_appended_total{`+jf+`}[$__rate_interval]))`, "{{instance}}")).
		Unit("short").AxisLabel("samples / s").Min(0))
	b.WithRow(dashboard.NewRowBuilder("Failover"))
	b.WithPanel(timeSeries("Age of the specs kept for failover", "How old each cluster's Deployments as fleetwatch last read them are: what a failover would recreate (remediation.specs.interval). A lost cluster's grows from the moment it was lost (remediate/README.md). A single 0 without a cluster: fleetwatch keeps no cluster's Deployments (remediation is off, or no cluster has a kubeconfig_file).", 24, 8).
		WithTarget(query("A", `time() - max by (cluster) (`+remediate.MetricSpecsKeptAt+`{`+jf+`, `+cf+`})`+reporting, "{{cluster}}")).
		Unit("s").Min(0))
	b.WithRow(dashboard.NewRowBuilder("Webhooks"))
	b.WithPanel(timeSeries("Events waiting for each receiver", "Journaled incident and remediation events a webhook receiver has not taken yet (hooks/README.md): it grows while the receiver is down or refuses, and falls back to 0 once it answers 2xx again. Nothing is lost while it waits, up to max_event_age.", 8, 8).
		WithTarget(query("A", `max by (receiver) (`+hooks.MetricPending+`{`+jf+`})`, "{{receiver}}")).
		Unit("short").Min(0))
	b.WithPanel(timeSeries("Deliveries", "Webhook delivery attempts a second, by receiver and result; failures are retried with backoff.", 8, 8).
		WithTarget(query("A", `sum by (receiver, result) (rate(`+hooks.MetricDeliveries+`{`+jf+`}[$__rate_interval]))`, "{{receiver}} {{result}}")).
		Unit("short").AxisLabel("attempts / s").Min(0))
	b.WithPanel(timeSeries("Events dropped", "Events a receiver never got: undelivered past its max_event_age. Anything above 0 lost a page or an approval request.", 8, 8).
		WithTarget(query("A", `sum by (receiver) (increase(`+hooks.MetricDropped+`{`+jf+`}[1h]))`, "{{receiver}}")).
		Unit("short").AxisLabel("events / h").Min(0))
	return b
}

// Command alertbench measures fleetwatch's alert intake side by side with a real Alertmanager
// ingesting the very same alert stream in the same run: alerts per second, CPU per 100k alerts and
// peak memory while member clusters' Prometheus servers post their active alerts, and how long an
// alert takes to show up (in an incident for fleetwatch; in the alert list for Alertmanager).
// `make bench-alerts` runs it; `make bench` runs it after hack/bench.
//
// The stream is deterministic (--seed): --alerts active alerts spread evenly over --clusters
// clusters, shaped like kube-prometheus alerts (KubePodCrashLooping, CPUThrottlingHigh,
// KubePodNotReady, KubeDeploymentReplicasMismatch, TargetDown, KubeContainerWaiting, KubeJobFailed
// with their labels, severity, summary/description/runbook_url annotations, startsAt in the past,
// endsAt --ends-after (4m) from the start of the phase, and a generator URL), encoded as
// Prometheus's notifier posts them: JSON arrays of Alertmanager API v2 PostableAlert of at most
// --batch alerts (Prometheus's default), each from one cluster, POST /api/v2/alerts, with
// --workers requests in flight; the clusters take turns. fleetwatch gets every batch with its
// cluster's bearer token and stamps the `cluster` label itself; Alertmanager gets the same alerts
// with a `cluster` label added, so both hold the same distinct alerts.
//
// Each round starts each target fresh, one at a time (the order alternates between rounds, so
// neither always runs on a warmer machine), and runs two phases: "new" posts every alert once,
// "resend" posts them all again as Prometheus does every minute (same startsAt, new endsAt).
// Bodies are encoded before each phase, outside the measurement. Per phase: alerts/s (wall clock
// from the first request to the last answer), the server's CPU from /proc/<pid>/stat per 100k
// alerts during the sends and until the target settled (fleetwatch: every alert of the phase was
// in an incident evaluation, by its alert-to-incident histogram; Alertmanager: its CPU use fell
// below 5% of a core), and fleetwatch's alert-to-incident p50/p99 from the increase of
// fleetwatch_correlate_alert_to_incident_seconds over the phase. After both phases a probe alert
// with a unique label is posted and the target is polled until it shows it: fleetwatch in GET
// /api/v1/incidents?state=active&cluster=..., Alertmanager in GET
// /api/v2/alerts?filter=probe_id=.... Then the CPU the target uses holding the alerts with no
// input (--steady), peak RSS (VmHWM), and a check that the target holds every alert. A round that
// outlasts --ends-after lets alerts expire that a Prometheus would have posted again by then; the
// check becomes a warning with the counts.
//
// It owns only the load and the measurement: it builds nothing (--fleetwatch and --alertmanager
// are paths; `make bench-alerts` builds and installs them first) and of fleetwatch it imports
// only the names of the metrics it reads (correlate's constants), so it measures the binaries
// as released, through their HTTP APIs only. Per phase it also reports the evaluations
// fleetwatch ran until it settled and their mean duration
// (fleetwatch_correlate_evaluation_duration_seconds).
//
//	go run ./hack/alertbench --fleetwatch=bin/fleetwatch --alertmanager=$FLEETWATCH_PEERS_BIN/alertmanager \
//	    --clusters=100 --alerts=100000 --rounds=3 --json=alerts.json --profile=prof/
package main

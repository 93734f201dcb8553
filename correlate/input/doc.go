// Package input takes alerts from member clusters into the correlation engine (a
// correlate.Sink), by the two ways a cluster already knows how to send them:
//
//   - POST /api/v2/alerts, Alertmanager's API v2, so a cluster's Prometheus lists fleetwatch
//     under alerting.alertmanagers unchanged (source "prometheus");
//   - POST /api/v1/alertmanager/webhook, the payload (version "4") of an Alertmanager
//     webhook_config, for clusters whose own Alertmanager forwards (source "alertmanager").
//
// Both authenticate the cluster with its fleetwatch.yml credentials (internal/clusterauth),
// stamp the `cluster` label and reject an alert whose `cluster` label names another cluster.
// Like the remote-write receiver in collector, a request is accepted whole or not at all: one
// invalid or forged alert makes the whole request 400 and nothing of it reaches the Sink, so a
// sender is never told "ok" about alerts that were not kept and never has to guess which were.
// The answer is 200 only after Sink.Ingest returned nil; an Ingest error is 503, which a
// forwarding Alertmanager retries with backoff, and for which a Prometheus keeps nothing: it
// drops the batch and sends its alerts again (firing ones, and resolved ones for 15 minutes)
// every --rules.alert.resend-delay (1m by default).
//
// The package owns the HTTP side only (decoding, validation, authentication, status codes and
// their metrics). It must not deduplicate, group or store alerts: that is the engine's, behind
// the Sink. It answers nothing else of Alertmanager's API (Prometheus's notifier only posts).
package input

// Package sim is the fleet lab: a simulator of N synthetic Kubernetes clusters that a real
// Prometheus can scrape as if each were a cluster running kube-state-metrics v2.
//
// For every cluster it owns a deterministic model (nodes, namespaces, deployments, pods and
// containers with CPU/memory requests and images, all derived from Options.Seed) and serves:
//
//   - GET /clusters/{name}/metrics: kube-state-metrics v2 series, with the exact metric names,
//     label names and types kube-state-metrics exports (client_golang const metrics built from
//     the model at collect time, one Registry per cluster).
//   - GET /clusters/{name}/apiserver/metrics: a control-plane signal (200 while up, 503 while
//     down), so a Prometheus job scraping it gets up{job="apiserver"} 1 or 0.
//   - GET /clusters: the truth per cluster, for tests to compare with what a query returns.
//   - /scenarios: timed YAML scenarios (nodes NotReady, CrashLoopBackOff, bad rollouts,
//     saturation ramps, a silent cluster, a control plane down, image drift) that mutate the
//     model, started, stopped or stepped over HTTP.
//
// Everything time-dependent (restart counters, saturation ramps, apiserver counters, scenario
// steps) is computed from Options.Now, so tests drive it with a fake clock.
//
// With an Actuator (SetActuator; internal/kubelab gives every cluster a real control plane),
// steps act on real clusters through their API servers instead, the truth comes from their
// objects, and the real kube-state-metrics serves the series.
//
// The package itself never talks to a real cluster (an Actuator does), never registers
// metrics in a global registry and reads no flags.
package sim

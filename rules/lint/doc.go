// Package lint checks Prometheus rule files for mistakes that are easy to make on a multi-cluster
// view, where every series carries a `cluster` label:
//
//   - aggregation: an aggregation that drops the cluster label (sum, avg, count, ... without
//     "by (cluster, ...)", or "without (cluster, ...)") adds up series of different clusters, and
//     topk, bottomk, limitk and limit_ratio without cluster in "by" rank or pick series across
//     clusters;
//   - join: a binary operation with "on (...)" that leaves cluster out, or "ignoring (...)" that
//     names it, matches series of one cluster with series of another;
//   - selector: a vector selector with neither a metric name nor a job matcher reads every
//     series of the fleet.
//
// Some rules compare clusters on purpose (image drift, fleet-wide totals). Such a rule is marked
// with a comment containing "fleetwatch:fleet-wide", written anywhere in the rule: a YAML comment
// on the lines just above it or inside it, or a PromQL comment in its expr. A marker in the
// comments just above a group's name, or between its name and its first rule, marks every rule
// of the group. The marker turns off the aggregation and join checks; the selector check still
// applies. A comment, unlike a rule label, adds nothing to the recorded series or to the alerts,
// and, unlike an annotation, recording rules can carry it too:
//
//	# fleetwatch:fleet-wide: compares each cluster with the rest of the fleet.
//	- record: namespace_container_image:kube_pod_container_info_clusters:count
//	  expr: count by (namespace, container, image) (kube_pod_container_info)
//
// The package owns the checks and the parsing of rule files into located findings. It reads rule
// files only: it never changes them and does not evaluate rules.
package lint

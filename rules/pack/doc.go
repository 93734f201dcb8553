// Package pack is fleetwatch's built-in rule pack: Prometheus recording and alerting rules for
// the fleet's kube-state-metrics series (node health, request saturation, crash loops, silent
// clusters, control planes, image drift), written as rule-file templates whose thresholds and
// "for" durations come from Thresholds.
//
// It owns the templates, their rendering into ordinary rule files, each checked with
// Prometheus's rulefmt, and their promtool unit tests (testdata/*_test.yml); rules/README.md
// documents every rule, its PromQL and its threshold key. It does not evaluate rules, load
// them into a rules manager or touch the view: the rules package does that with whatever files
// Files writes.
package pack

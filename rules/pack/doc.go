// Package pack is fleetwatch's built-in rule pack: Prometheus recording and alerting rules for
// the fleet's kube-state-metrics series (node health, request saturation, crash loops, silent
// clusters, control planes, API servers fleetwatch cannot reach, image drift), written as
// rule-file templates whose thresholds and "for" durations come from config.Thresholds
// (rules.pack in fleetwatch.yml; internal/config owns that type, its defaults and its
// validation).
//
// It owns the templates, their rendering into ordinary rule files, each checked with
// Prometheus's rulefmt, and their promtool unit tests (testdata/*_test.yml); rules/README.md
// documents every rule, its PromQL and its threshold key. It does not evaluate rules, load
// them into a rules manager or touch the view: the rules package does that with whatever files
// Files writes.
//
// It also owns the names of what the pack produces and other packages read (names.go): the
// recorded series and the alerts. Placement, correlation and the dashboards import those
// constants instead of typing the names again, and the tests fail when a constant and the
// templates disagree. Of fleetwatch's packages it imports only internal/config, so that every
// stage, correlate included, can import the names without an import cycle.
package pack

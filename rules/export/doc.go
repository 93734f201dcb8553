// Package export writes rule files as one PrometheusRule manifest (monitoring.coreos.com/v1),
// the resource the Prometheus Operator turns into rule files for the Prometheus it manages.
//
// The manifest is built from rulefmt's own types and marshalled as YAML, so it needs no Go type
// of the operator's CRD; spec.groups is exactly the "groups" list of a Prometheus rule file.
// For a member cluster (Options.Member), rules that only make sense on fleetwatch's global view
// are left out: those reading fleetwatch's own series (fleetwatch_*), those that compare clusters
// (see the lint package's aggregation and join checks), the rules reading what those record,
// and whatever else only fed alerts that were left out. A comment at the top of the manifest
// lists what was left out and why.
//
// The package reads rule files and writes a manifest; it does not render the rule pack, talk to
// a Kubernetes API server or evaluate rules.
package export

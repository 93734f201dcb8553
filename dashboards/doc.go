// Package dashboards generates fleetwatch's Grafana dashboards from the names the rule pack
// records and the thresholds it alerts at, so a dashboard and an alert never disagree about
// what "too many NotReady nodes" means: the thresholds come from the same config.Thresholds
// (rules.pack in fleetwatch.yml), never from a second copy, and the series and alert names are
// rules/pack's exported constants.
//
// It owns:
//
//   - the dashboards themselves (Build), written with the Grafana Foundation SDK as Grafana's
//     dashboard JSON (schema v1, the format file provisioning and /api/dashboards/db take);
//   - the provisioning files that go with them (Files): a Prometheus data source pointing at
//     fleetwatch's query API and a file dashboard provider;
//   - pushing them through Grafana's HTTP API (Client), reporting what changed per dashboard;
//   - the list of every PromQL query a dashboard runs (Dashboard.Queries), which the tests
//     parse, check against the metric names that exist and run against the fleet lab.
//
// Two kinds of dashboards read two different Prometheus APIs (Source): the fleet dashboards
// read fleetwatch's global view, where every series carries `cluster`; the dashboards about
// fleetwatch itself and its incidents read a Prometheus that scrapes fleetwatch's /metrics,
// because fleetwatch's own telemetry is not written into the view.
//
// It must not touch a running fleetwatch: it reads no configuration file and starts nothing;
// cmd/fleetwatch loads the configuration and hands it the thresholds.
package dashboards

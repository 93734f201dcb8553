// Package config loads and validates fleetwatch.yml: the clusters of the fleet, how each one
// sends its metrics (or is pulled) and how fleetwatch reaches its API server, and the settings of
// the global query view, the API server probe, the rules, the correlation of alerts into
// incidents, placement and access.
//
// Defaults are set and every field is validated in UnmarshalYAML (the `type plain` idiom of
// Prometheus's config package), so a Config that loads without error is ready to use. Errors name
// the cluster and the field that is wrong. Secrets (tokens, passwords) and kubeconfigs are read
// from files whose paths are resolved against the directory of the config file.
//
// Configuration flows one way, as in Prometheus. This package owns every type of fleetwatch.yml,
// its default (defined here and nowhere else) and its validation, and it imports no fleetwatch
// package (TestNoFleetwatchImports fails if it does): the packages that are configured import
// it, never the reverse. Each of them receives the sections it reads as these types, never as a
// copy of their fields: query takes its QueryConfig; collector and correlate/input, which read
// several sections, take the *Config; rules, correlate and schedule take a small struct
// (rules.Config, correlate.Settings, schedule.Settings) that holds their sections as they are,
// plus only what is not a setting of the file (the files a rule_files glob matched, the pack
// rendered, the clusters' names). cmd/fleetwatch picks the sections; it never declares a setting
// again or gives one a default of its own.
package config

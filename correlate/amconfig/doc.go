// Package amconfig generates the Alertmanager configuration that routes fleetwatch's incidents:
// a routing tree by severity, scope and team, inhibition rules between incidents, and an
// optional webhook for on-call automation that sees every incident, firing and resolved.
//
// The configuration is built with Alertmanager's own types (github.com/prometheus/alertmanager/
// config) and marshalled. The sections the spec gives (receivers, global, the webhook) are read
// with the same types, which validate them, and written as they were given: marshalled, those
// types would spell out every default of this Alertmanager version and write each secret as
// "<secret>", which loads back as an empty URL or a wrong key. The whole file is then loaded
// with config.Load before it is returned, so what this package hands out is a file
// Alertmanager accepts as is.
//
// It knows the labels of fleetwatch's incident alerts (the constants in spec.go) only as far as
// routing needs them: it does not send alerts, and it must not import the correlation engine.
// README.md describes the generated tree and how to adapt it.
package amconfig

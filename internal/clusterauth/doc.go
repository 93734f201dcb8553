// Package clusterauth tells which member cluster sent an HTTP request, from the per-cluster
// credentials (a bearer token or basic auth) configured in fleetwatch.yml.
//
// Every endpoint a member cluster pushes to (remote-write in collector, alerts in
// correlate/input) authenticates through it, so one cluster's credentials mean the same cluster
// everywhere. It only answers "which cluster, if any"; what a caller does with an unknown
// request (the 401, its metrics) stays with the caller. It keeps no state besides the table and
// reads no files: config.Load has already read the secrets.
package clusterauth

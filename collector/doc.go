// Package collector gets every member cluster's metrics into fleetwatch and stamps each series
// with the `cluster` label of the cluster that sent it.
//
// It owns the two ways in: the Prometheus remote-write receiver (Remote-Write 1.0 and 2.0, built
// on client_golang's remote API handler and Prometheus's protobuf types), and the /federate pull
// (Prometheus's scrape manager). Both authenticate the cluster and write through a
// storage.Appendable; the collector knows nothing about who reads the data.
//
// It also writes what fleetwatch itself knows about each cluster into the view through the
// same storage.Appendable: when data from it was last stored (IngestRecorder), and whether
// fleetwatch reaches its API server with the cluster's kubeconfig_file (APIProber, GET /readyz
// with client-go), so that a cluster fleetwatch cannot act on while its metrics still arrive
// shows in the view.
//
// The receiver is strict where Prometheus's own handler is lenient: a request is stored whole
// or not at all. Prometheus's handler drops series with invalid labels from a 1.0 request and
// still answers 204, and commits the valid part of a 2.0 request it answers 400; fleetwatch
// rolls the whole request back and answers 400 in both cases, so a sender is never told "ok"
// about data that was not kept and never has to guess which part was.
package collector

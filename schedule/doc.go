// Package schedule turns the global view into placement decisions: where a workload's replicas
// should run across the fleet, and whether the rest of the fleet could absorb the pods of
// clusters that fail (what-if).
//
// It owns the cluster snapshot (Source reads the rule pack's recording rules, the last-ingest
// series and the open incidents; Settings add each cluster's static labels, compliance tags,
// cost and latency from fleetwatch.yml), the filters and scores (Decide), the what-if (WhatIf)
// and the Service that keeps the snapshot fresh, exports each cluster's score and free capacity
// as metrics and serves /api/v1/placements and /api/v1/whatif. Decide and WhatIf are pure
// functions of a snapshot: the same snapshot and request always give the same decision.
//
// It reads the view through a QueryFunc and never writes to it, and it only reads incidents;
// acting on a decision (deploying, failing over) belongs to the caller or to remediate.
// schedule/ocm writes the scores as Open Cluster Management AddOnPlacementScore objects.
// README.md documents the model, every filter and score, and the API.
package schedule

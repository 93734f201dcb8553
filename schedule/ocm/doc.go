// Package ocm publishes fleetwatch's per-cluster placement scores to an Open Cluster
// Management (OCM) hub, so that OCM's own Placement scheduler can rank clusters by them.
//
// For every cluster it owns one AddOnPlacementScore object
// (cluster.open-cluster-management.io/v1alpha1, resource addonplacementscores) named
// Options.Name ("fleetwatch" by default) in the cluster's namespace on the hub, labelled
// app.kubernetes.io/managed-by=fleetwatch. The object carries no spec; everything lives in
// status, which is a subresource on a real hub: a Create there drops status, so Publish
// creates the object when it is absent and then always writes status with UpdateStatus.
//
// status.scores holds these items, all integers in OCM's range [-100, 100]:
//
//	fleetwatchPlacementScore  round(Score), kept in [0, 100] for schedulable clusters;
//	                          -100 when the cluster is not schedulable (stale data,
//	                          unhealthy, ...), the lowest value OCM accepts.
//	fleetwatchFreeCPUCores    round(FreeCPUCores), clamped to [-100, 100].
//	fleetwatchFreeMemoryGiB   round(FreeMemoryBytes / 2^30), clamped to [-100, 100].
//
// The clamp of the two capacity scores is lossy on purpose: OCM rejects values outside
// [-100, 100], so every cluster with 100 or more free cores (or GiB) scores the same 100.
// They tell "nearly full" from "has room", not big from huge; rank by
// fleetwatchPlacementScore for anything finer.
//
// status.validUntil is the publish time plus Options.ValidFor. The placement controller
// treats a score that has expired, or is missing, as 0 — which ranks above an unschedulable
// cluster's -100 — so fleetwatch must publish more often than ValidFor, and a fleetwatch that
// stops publishing degrades to "no opinion" rather than leaving stale rankings behind.
// status.conditions gets one condition of type AddOnPlacementScoreUpdated (the type the OCM
// enhancement proposal uses in its examples). The proposal's scoring uses only scores and
// validUntil, so the condition is for people running kubectl describe. Conditions of other
// types are left alone.
//
// A Placement (cluster.open-cluster-management.io/v1beta1) uses the score through its
// prioritizer policy with an AddOn score coordinate; resourceName is Options.Name:
//
//	apiVersion: cluster.open-cluster-management.io/v1beta1
//	kind: Placement
//	metadata:
//	  name: roomiest-clusters
//	  namespace: my-app
//	spec:
//	  numberOfClusters: 2
//	  prioritizerPolicy:
//	    mode: Exact            # only the prioritizers listed below count
//	    configurations:
//	      - scoreCoordinate:
//	          type: AddOn
//	          addOn:
//	            resourceName: fleetwatch            # Options.Name
//	            scoreName: fleetwatchPlacementScore
//	        weight: 1
//
// The hub identity fleetwatch runs as needs get, create and update on addonplacementscores
// and update on addonplacementscores/status in every managed cluster namespace.
//
// This package owns only the AddOnPlacementScore objects named Options.Name. It does not
// compute scores (package schedule does), never creates or deletes namespaces, does not
// delete score objects of clusters that left the fleet (they expire through validUntil),
// and touches no other OCM resource.
package ocm

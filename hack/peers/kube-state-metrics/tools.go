//go:build tools

// Package tools pins the kube-state-metrics command so `go mod tidy` keeps its dependencies.
package tools

import _ "k8s.io/kube-state-metrics/v2"

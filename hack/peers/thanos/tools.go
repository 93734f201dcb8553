//go:build tools

// Package tools pins the Thanos command so `go mod tidy` keeps its dependencies.
package tools

import _ "github.com/thanos-io/thanos/cmd/thanos"

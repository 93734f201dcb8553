// Package query owns the global view: the embedded Prometheus TSDB that the collector writes
// into, the remote sources merged with it (Prometheus remote-read endpoints and Thanos
// StoreAPI endpoints), replica deduplication (Thanos's penalty algorithm, dedup.go), the PromQL
// engine (the Thanos promql-engine, with Prometheus's engine where that is the one to use:
// internal/promqlengine) and the Prometheus HTTP API that serves it, including a result cache
// that keeps range queries in step-aligned pieces (cache.go).
//
// It exposes a storage.Queryable, a promql.QueryEngine and a rules-style query function; it
// must not know who writes into the TSDB (that is the collector) nor who evaluates rules.
package query

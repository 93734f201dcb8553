package query

import (
	"sort"
	"sync"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/metadata"
)

// maxMetadataPerMetric bounds what one metric name can hold, so a sender that changes help
// texts all the time cannot grow the store without bound.
const maxMetadataPerMetric = 10

// metadataStore keeps the metric metadata (type, help, unit) that clusters send with
// remote-write, for /api/v1/metadata. It is a cache of what senders repeat every minute, not
// data fleetwatch acknowledges, so it lives in memory.
type metadataStore struct {
	mu      sync.RWMutex
	metrics map[string][]metadata.Metadata
}

func newMetadataStore() *metadataStore {
	return &metadataStore{metrics: map[string][]metadata.Metadata{}}
}

func (s *metadataStore) set(metric, typ, help, unit string) {
	m := metadata.Metadata{Type: model.MetricType(typ), Help: help, Unit: unit}
	s.mu.RLock()
	for _, have := range s.metrics[metric] {
		if have == m {
			s.mu.RUnlock()
			return
		}
	}
	s.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := s.metrics[metric]
	for _, have := range ms {
		if have == m {
			return
		}
	}
	if len(ms) >= maxMetadataPerMetric {
		ms = ms[1:]
	}
	s.metrics[metric] = append(ms, m)
}

// list returns metadata as /api/v1/metadata does: metric name -> entries, with the limits of
// that API (limit: metrics, limitPerMetric: entries per metric; negative means no limit).
func (s *metadataStore) list(metric string, limit, limitPerMetric int) map[string][]metadata.Metadata {
	s.mu.RLock()
	defer s.mu.RUnlock()
	names := make([]string, 0, len(s.metrics))
	for name := range s.metrics {
		if metric == "" || name == metric {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	out := map[string][]metadata.Metadata{}
	for _, name := range names {
		if limit >= 0 && len(out) >= limit {
			break
		}
		ms := s.metrics[name]
		if limitPerMetric > 0 && len(ms) > limitPerMetric {
			ms = ms[:limitPerMetric]
		}
		out[name] = append([]metadata.Metadata(nil), ms...)
	}
	return out
}

package schedule

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/http/httptest"
	"testing"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// FuzzPlacementRequest feeds arbitrary bodies to the placement API's decoder and Decide: no
// panic, every error is a bad request, and a decision never exceeds a cluster's ceiling or
// places on a filtered cluster.
func FuzzPlacementRequest(f *testing.F) {
	for _, seed := range []string{
		`{"replicas": 3, "cpu": "500m", "memory": "1Gi"}`,
		`{"replicas": 2, "cpu": 1, "mode": "clusters", "clusters": 2, "constraints": {"compliance": ["pci"], "regions": ["eu"]}}`,
		`{"replicas": 1, "memory": 1e9, "constraints": {"user_regions": ["eu-users"], "max_latency": "80ms"}, "weights": {"cost": 3, "spread": 0}}`,
		`{"replicas": -1}`, `[]`, `{"cpu": "1e400"}`,
	} {
		f.Add([]byte(seed))
	}
	s := randomSnapshot(rand.New(rand.NewPCG(9, 9)), 12)
	f.Fuzz(func(t *testing.T, body []byte) {
		r := Request{Weights: config.DefaultWeights}
		req := httptest.NewRequest("POST", "/api/v1/placements", bytes.NewReader(body))
		if err := decodeBody(req, &r); err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("decode error is not a bad request: %v", err)
			}
			return
		}
		d, err := Decide(s, r)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("decide error is not a bad request: %v", err)
			}
			return
		}
		for _, res := range d.Clusters {
			if res.Replicas == 0 {
				continue
			}
			if len(res.Filtered()) > 0 {
				t.Fatalf("replicas on filtered cluster %s", res.Cluster)
			}
			c := s.Cluster(res.Cluster)
			if c.RequestedCPU+float64(res.Replicas)*float64(r.CPU) > c.AllocatableCPU*s.Ceiling*(1+1e-9) ||
				c.RequestedMemory+float64(res.Replicas)*float64(r.Memory) > c.AllocatableMemory*s.Ceiling*(1+1e-9) {
				t.Fatalf("%s above the ceiling with %d replicas", res.Cluster, res.Replicas)
			}
		}
		_ = res2string(d)
	})
}

// res2string renders every explanation, as the API does when it encodes a decision.
func res2string(d *Decision) int {
	n := 0
	for _, c := range d.Clusters {
		n += len(c.Why())
	}
	return n
}

package schedule

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDecisionJSONMatchesReflection: the hand-written encoder writes exactly what
// encoding/json writes for the struct tags, over random decisions of every outcome.
func TestDecisionJSONMatchesReflection(t *testing.T) {
	type plain Decision // no MarshalJSON: encoding/json's own, with ClusterResult.MarshalJSON
	rng := rand.New(rand.NewPCG(11, 12))
	for range 200 {
		s := randomSnapshot(rng, 1+rng.IntN(30))
		s.At = s.At.Add(time.Duration(rng.IntN(1e9)))
		d, err := Decide(s, randomRequest(rng, s))
		require.NoError(t, err)
		d.Workload = []string{"", "shop/api", "odd \"name\" <&> \\ \n\t\x01 é \u2028 \xff"}[rng.IntN(3)]
		fast, err := json.Marshal(d)
		require.NoError(t, err)
		slow, err := json.Marshal(plain(*d))
		require.NoError(t, err)
		require.Equal(t, string(slow), string(fast))
	}
	for _, f := range []float64{0, 1, -1, 0.5, 1e-7, 1.5e-9, 1e21, 123456789012, 1e20, 2.5e-6} {
		d := &Decision{Ceiling: f}
		fast, _ := json.Marshal(d)
		slow, _ := json.Marshal(plain(*d))
		require.Equal(t, string(slow), string(fast), "%v", f)
	}
}

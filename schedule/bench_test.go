package schedule

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// BenchmarkDecide is the decision latency `make bench` reports: one placement (filters, scores,
// the spread ordering, the division of replicas and every cluster's explanation) on a snapshot
// of 10, 100 and 1,000 clusters, over a fixed mix of requests (divided and pick-N, with and
// without compliance, region and latency constraints). Besides ns/op it reports the p50 and p99
// of the single decisions and decisions per second on one goroutine.
func BenchmarkDecide(b *testing.B) { benchDecide(b, false) }

// BenchmarkDecideAndEncode is BenchmarkDecide plus encoding the answer as the API does (every
// cluster's scores, reasons and explanation put into words, Decision.MarshalJSON): what a
// caller of POST /api/v1/placements waits for, without the network.
func BenchmarkDecideAndEncode(b *testing.B) { benchDecide(b, true) }

func benchDecide(b *testing.B, encode bool) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(fmt.Sprintf("clusters=%d", n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(7, uint64(n)))
			s := randomSnapshot(rng, n)
			reqs := make([]Request, 64)
			for i := range reqs {
				reqs[i] = randomRequest(rng, s)
			}
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				t := time.Now()
				d, err := Decide(s, reqs[i%len(reqs)])
				if err != nil {
					b.Fatal(err)
				}
				if encode {
					if _, err := d.MarshalJSON(); err != nil {
						b.Fatal(err)
					}
				}
				lat = append(lat, time.Since(t))
			}
			elapsed := time.Since(start)
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "p50-µs")
			b.ReportMetric(float64(lat[(len(lat)*99)/100].Nanoseconds())/1e3, "p99-µs")
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "decisions/s")
		})
	}
}

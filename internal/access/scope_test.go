package access

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/teststorage"
	"github.com/stretchr/testify/require"
)

// scopeQueries are tricky ways to reach another cluster's series.
var scopeQueries = []string{
	`up`,
	`up{cluster="eu-2"}`,
	`up{cluster!="eu-1"}`,
	`up{cluster=~"eu-.*"}`,
	`up{cluster=~"eu-1|eu-2"} or up{cluster="eu-3"}`,
	`up or on() vector(3)`,
	`{__name__=~".+"}`,
	`secret{cluster="eu-2"}`,
	`sum(secret)`,
	`sum by (cluster) (rate(requests_total[5m]))`,
	`max_over_time(secret[10m:1m])`,
	`label_replace(secret, "cluster", "eu-1", "", "")`,
	`label_join(up, "cluster", ",", "job")`,
	`secret offset 1m`,
	`secret @ 100`,
	`up unless on() secret`,
	`up and on() secret{cluster="eu-2"}`,
	`count_values("cluster", secret)`,
	`absent(secret{cluster="eu-2"})`,
	`topk(1, secret) * on() group_left() up`,
	`-(secret)`,
	`(secret)`,
	`sort_desc(secret)`,
	`histogram_quantile(0.9, sum by (le) (rate(latency_bucket[5m])))`,
	`scalar(secret{cluster="eu-2"}) + up`,
	`timestamp(secret)`,
	`1 + 2`,
	`"a"`,
}

// fleetStorage holds three clusters' series; onlyMine keeps only eu-1's.
func fleetStorage(t testing.TB, onlyMine bool) storage.Storage {
	st := teststorage.New(t)
	app := st.Appender(context.Background())
	for i, c := range []string{"eu-1", "eu-2", "eu-3"} {
		if onlyMine && c != "eu-1" {
			continue
		}
		for ts := int64(0); ts <= 600_000; ts += 15_000 {
			for _, ls := range []labels.Labels{
				labels.FromStrings("__name__", "up", "cluster", c, "job", "kube"),
				labels.FromStrings("__name__", "secret", "cluster", c),
				labels.FromStrings("__name__", "requests_total", "cluster", c),
				labels.FromStrings("__name__", "latency_bucket", "cluster", c, "le", "1"),
				labels.FromStrings("__name__", "latency_bucket", "cluster", c, "le", "+Inf"),
			} {
				_, err := app.Append(0, ls, ts, float64(ts/1000)*float64(i+1)+float64(i*1000))
				require.NoError(t, err)
			}
		}
	}
	require.NoError(t, app.Commit())
	return st
}

func evalAt(t testing.TB, eng *promql.Engine, st storage.Queryable, q string) string {
	qry, err := eng.NewInstantQuery(context.Background(), st, nil, q, time.UnixMilli(600_000))
	require.NoError(t, err)
	defer qry.Close()
	res := qry.Exec(context.Background())
	if res.Err != nil {
		return "error: " + res.Err.Error()
	}
	return res.Value.String()
}

// checkScoped asserts the properties of one enforced query: every selector carries the
// cluster matcher, and it answers the same over the whole fleet as over a view that holds only
// the allowed cluster's data: nothing of another cluster can change its answer.
func checkScoped(t testing.TB, eng *promql.Engine, full, mine storage.Queryable, q string) {
	if _, err := parser.ParseExpr(q); err != nil {
		return
	}
	m, err := ClusterMatcher("cluster", []string{"eu-1"})
	require.NoError(t, err)
	out, err := EnforceQuery(q, m)
	if err != nil {
		return // refused: nothing is served
	}
	expr, err := parser.ParseExpr(out)
	require.NoError(t, err, "enforced %q as %q", q, out)
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			found := false
			for _, x := range vs.LabelMatchers {
				found = found || x.String() == m.String()
			}
			require.True(t, found, "selector %s of %q lacks %s", vs, out, m)
		}
		return nil
	})
	require.Equal(t, evalAt(t, eng, mine, out), evalAt(t, eng, full, out), "%q enforced as %q", q, out)
}

func newEngine() *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, EnableAtModifier: true, EnableNegativeOffset: true})
}

func TestEnforceQuery(t *testing.T) {
	full, mine := fleetStorage(t, false), fleetStorage(t, true)
	eng := newEngine()
	for _, q := range scopeQueries {
		t.Run(q, func(t *testing.T) { checkScoped(t, eng, full, mine, q) })
	}
	// The check can fail: an unscoped query answers differently over the fleet than over one
	// cluster's data.
	for _, q := range []string{"sum(secret)", "up", `count_values("cluster", secret)`} {
		require.NotEqual(t, evalAt(t, eng, mine, q), evalAt(t, eng, full, q), q)
	}
}

// FuzzEnforceQuery: a scoped query never returns data of another cluster.
func FuzzEnforceQuery(f *testing.F) {
	for _, q := range scopeQueries {
		f.Add(q)
	}
	full, mine := fleetStorage(f, false), fleetStorage(f, true)
	eng := newEngine()
	f.Fuzz(func(t *testing.T, q string) {
		if len(q) > 300 {
			return
		}
		checkScoped(t, eng, full, mine, q)
	})
}

package input

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/go-openapi/strfmt"
	"github.com/prometheus/alertmanager/api/v2/models"
	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// FuzzUnmarshalPostable: the one-pass decoding gives what json.Unmarshal into
// models.PostableAlerts gives, errors included.
func FuzzUnmarshalPostable(f *testing.F) {
	for _, s := range []string{
		`[]`, `null`, `{}`, `[null]`, `[1]`, `[{}]`, `[{"labels":`, `[{"labels":{"a":"b"}},null]`,
		`[{"labels":{"a":"b"},"annotations":{"s":"x"},"startsAt":"2026-05-04T11:00:00Z","endsAt":"2026-05-04T12:00:00.123+02:00","generatorURL":"http://x/"}]`,
		`[{"Labels":{"a":"b"},"labels":{"c":"d"},"startsAt":null,"endsAt":"2026-05-04"}]`,
		`[{"labels":{"a":1}}]`, `[{"labels":{"a":"b"},"startsAt":"yesterday"}]`, `[{"labels":{"a":"b"},"generatorURL":3}]`,
		benchBody(3),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var want models.PostableAlerts
		wantErr := json.Unmarshal(body, &want)
		got, err := unmarshalPostable(body)
		if wantErr != nil {
			require.EqualError(t, err, wantErr.Error())
			return
		}
		require.NoError(t, err)
		require.Equal(t, want, got)
	})
}

// benchBody is a request of n alerts as Prometheus's notifier sends them.
func benchBody(n int) string {
	var alerts []string
	for i := range n {
		alerts = append(alerts, fmt.Sprintf(`{"annotations":{"description":"Pod payments/api-7d9f8-%d (api) is in waiting state (reason: \"CrashLoopBackOff\").","runbook_url":"https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping","summary":"Pod is crash looping."},"endsAt":"2026-05-04T11:04:00.000Z","startsAt":"2026-05-04T10:00:00.000Z","generatorURL":"https://prometheus.example.com/graph?g0.expr=max_over_time%%28kube_pod_container_status_waiting_reason%%5B5m%%5D%%29&g0.tab=1","labels":{"alertname":"KubePodCrashLooping","container":"api","endpoint":"http-main","instance":"10.64.1.2:8080","job":"kube-state-metrics","namespace":"payments","pod":"api-7d9f8-%d","prometheus":"monitoring/k8s","reason":"CrashLoopBackOff","service":"kube-state-metrics","severity":"warning","uid":"0f9e1c2a-%d"}}`, i, i, i))
	}
	return "[" + strings.Join(alerts, ",") + "]"
}

// BenchmarkDecodeAlertsV2 decodes one request of 64 alerts.
func BenchmarkDecodeAlertsV2(b *testing.B) {
	h, err := New(Options{Sink: &recordingSink{}})
	require.NoError(b, err)
	body := []byte(benchBody(64))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := h.decodeAlertsV2(body, "eu-1", testNow); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEndpointAlertsV2 serves one request of 64 alerts as Prometheus's notifier posts it:
// authenticated, its body read, decoded and ingested.
func BenchmarkEndpointAlertsV2(b *testing.B) {
	h, err := New(Options{Sink: correlate.SinkFunc(func(context.Context, []correlate.Alert) error { return nil }), Now: func() time.Time { return testNow }})
	require.NoError(b, err)
	require.NoError(b, h.ApplyConfig(&config.Config{Clusters: testClusters}))
	body := benchBody(64)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if r := do(h, "POST", PathAlertsV2, body, eu1); r.code != http.StatusOK {
			b.Fatal(r.code, r.body)
		}
	}
}

// TestGeneratorURLsShared: alerts of different requests with the same generator URL (the same
// rule in the same cluster) hold one copy of it.
func TestGeneratorURLsShared(t *testing.T) {
	h, err := New(Options{Sink: &recordingSink{}})
	require.NoError(t, err)
	// Longer than the decoder shares (maxShared), as a rule's expression makes it.
	long := "http://prometheus.eu-1.example.com/graph?g0.expr=" + strings.Repeat("sum%28rate%28x%5B5m%5D%29%29", 12)
	body := strings.ReplaceAll(benchBody(2), "https://prometheus.example.com/graph?g0.expr=", long)
	var urls []string
	for range 2 {
		alerts, err := h.decodeAlertsV2([]byte(body), "eu-1", testNow)
		require.NoError(t, err)
		for _, a := range alerts {
			urls = append(urls, a.GeneratorURL)
		}
	}
	require.Len(t, urls, 4)
	for _, u := range urls[1:] {
		require.Equal(t, urls[0], u)
		require.True(t, unsafe.StringData(urls[0]) == unsafe.StringData(u), "one copy") // require.Equal compares what they point to
	}
}

// FuzzParseDateTime: parseDateTime's shortcut gives what strfmt.ParseDateTime gives.
func FuzzParseDateTime(f *testing.F) {
	for _, s := range []string{
		"2026-05-04T11:04:00.000Z", "2026-05-04T11:04:00.000+02:00", "2026-05-04T11:04:00.000+0200",
		"2026-05-04T11:04:00.000000Z", "2026-05-04T11:04:00Z", "2026-05-04T11:04:00.000", "2026-05-04T11:04:00.0001Z",
		"2026-05-04T11:04:00.123-07:30", "2026-05-04T25:04:00.000Z", "", "2026-05-04",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, wantErr := strfmt.ParseDateTime(s)
		got, err := parseDateTime(s)
		if wantErr != nil {
			require.EqualError(t, err, wantErr.Error())
			return
		}
		require.NoError(t, err)
		require.True(t, time.Time(want).Equal(time.Time(got)), "%s: %v != %v", s, want, got)
		require.Equal(t, time.Time(want).Location().String(), time.Time(got).Location().String())
		_, wo := time.Time(want).Zone()
		_, go_ := time.Time(got).Zone()
		require.Equal(t, wo, go_)
	})
}

// TestLabelValuesShared: the short strings of alerts of different requests (label names and
// values, a summary) are one copy each; one written with escapes (the bench's descriptions
// quote their reason) is each alert's own.
func TestLabelValuesShared(t *testing.T) {
	h, err := New(Options{Sink: &recordingSink{}})
	require.NoError(t, err)
	// Two strings in one slot of the direct-mapped cache take it from each other, by design;
	// the seed is random, so the cache starts again until the body's strings have a slot each.
	var body models.PostableAlerts
	require.NoError(t, json.Unmarshal([]byte(benchBody(2)), &body))
	var strs []string
	for _, pa := range body {
		for _, m := range []map[string]string{pa.Labels, pa.Annotations} {
			for k, v := range m {
				strs = append(strs, k, v)
			}
		}
	}
	for {
		sharedStrings = stringCache{}
		sharedStrings.get(nil)
		slots := map[uint64]string{}
		free := true
		for _, v := range strs {
			slot := maphash.String(sharedStrings.seed, v) & (uint64(len(sharedStrings.slots)) - 1)
			if o, ok := slots[slot]; ok && o != v {
				free = false
			}
			slots[slot] = v
		}
		if free {
			break
		}
	}
	var alerts []correlate.Alert
	for range 2 {
		as, err := h.decodeAlertsV2([]byte(benchBody(2)), "eu-1", testNow)
		require.NoError(t, err)
		alerts = append(alerts, as...)
	}
	require.Len(t, alerts, 4)
	same := func(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }
	key := func(m map[string]string, k string) string {
		for kk := range m {
			if kk == k {
				return kk
			}
		}
		return ""
	}
	first := alerts[0]
	for _, a := range alerts[1:] {
		require.True(t, same(first.Labels["job"], a.Labels["job"]), "a label value")
		require.True(t, same(key(first.Labels, "namespace"), key(a.Labels, "namespace")), "a label name")
		require.True(t, same(first.Annotations["summary"], a.Annotations["summary"]), "a summary")
	}
	require.NotEqual(t, alerts[0].Annotations["description"], alerts[1].Annotations["description"])
	require.Equal(t, alerts[0].Annotations["description"], alerts[2].Annotations["description"], "the same alert, sent again")
	require.False(t, same(alerts[0].Annotations["description"], alerts[2].Annotations["description"]), "written with escapes: not kept across requests")
	require.Greater(t, len(alerts[0].Annotations["description"]), 0)
}

// TestStringCache: the cache gives back its input, shares what its slot holds, and is safe for
// concurrent requests (run with -race).
func TestStringCache(t *testing.T) {
	var c stringCache
	a := c.get([]byte("kube-state-metrics"))
	require.Equal(t, "kube-state-metrics", a)
	require.True(t, unsafe.StringData(a) == unsafe.StringData(c.get([]byte("kube-state-metrics"))), "shared")
	long := strings.Repeat("x", maxShared+1)
	require.False(t, unsafe.StringData(c.get([]byte(long))) == unsafe.StringData(c.get([]byte(long))), "too long to share")
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20000 {
				s := fmt.Sprintf("v-%d", (i*7+g)%5000)
				if got := c.get([]byte(s)); got != s {
					t.Errorf("got %q for %q", got, s)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestGeneratorURLForms: a generator URL with escapes, without, or null decodes as
// encoding/json decodes it; one without escapes is shared with the next request's.
func TestGeneratorURLForms(t *testing.T) {
	for _, u := range []string{`"http:\/\/prom\/graph?a=1\u0026b=2"`, `"http://prom/graph?a=1&b=2"`, `null`} {
		body := `[{"labels":{"alertname":"A"},"generatorURL":` + u + `}]`
		got, ok := decodeTokens([]byte(body))
		require.True(t, ok, body)
		var want models.PostableAlerts
		require.NoError(t, json.Unmarshal([]byte(body), &want))
		require.Equal(t, want, got, body)
	}
	body := []byte(`[{"labels":{"alertname":"A"},"generatorURL":"http://prom/graph?g0.expr=up"}]`)
	first, _ := decodeTokens(body)
	second, _ := decodeTokens(body)
	require.True(t, unsafe.StringData(string(first[0].GeneratorURL)) == unsafe.StringData(string(second[0].GeneratorURL)), "shared")
}

package correlate

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/correlate/amconfig"
)

// fuzzAlert builds an alert from fuzz input: labels and annotations from the strings (nil,
// empty or not), times in any zone, of any year.
func fuzzAlert(k1, v1, k2, v2, ann, gen, src string, start, end int64, zone int, shape uint8) Alert {
	a := Alert{GeneratorURL: gen, Source: src}
	switch shape % 3 {
	case 1:
		a.Labels = map[string]string{}
	case 2:
		a.Labels = map[string]string{k1: v1, k2: v2, "alertname": v1}
	}
	switch shape / 3 % 3 {
	case 1:
		a.Annotations = map[string]string{}
	case 2:
		a.Annotations = map[string]string{"summary": ann, k2: v1}
	}
	loc := time.FixedZone("z", zone%(30*3600))
	a.StartsAt = time.Unix(0, start).In(loc)
	if shape/9%2 == 1 {
		a.EndsAt = time.Unix(end, 0).In(loc) // seconds: years far beyond 9999
	}
	return a
}

// FuzzAlertJSON: the hand-written encoders write exactly what json.Marshal writes, or fail
// where it fails.
func FuzzAlertJSON(f *testing.F) {
	f.Add("pod", "api-1", "namespace", "payments", "a <b> & \"c\"", "http://p/graph?g0.expr=up", "prometheus", int64(1e18), int64(2e9), 3600, uint8(17))
	f.Add("\xff", "\u2028\x00", "", "", "\t\n", "", "", int64(0), int64(0), 0, uint8(0))
	f.Add("a", "b", "c", "d", "e", "f", "g", int64(-7e18), int64(9e15), -86399, uint8(26))
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, ann, gen, src string, start, end int64, zone int, shape uint8) {
		a := fuzzAlert(k1, v1, k2, v2, ann, gen, src, start, end, zone, shape)
		want, werr := json.Marshal(a)
		got, gerr := appendAlert([]byte("x"), &a)
		require.Equal(t, werr != nil, gerr != nil, "errors: %v, %v", werr, gerr)
		if werr == nil {
			require.Equal(t, "x"+string(want), string(got))
		}

		p := logPut{Now: a.EndsAt, FPs: []uint64{uint64(start), 0}, Alerts: []Alert{a, {}}}
		if shape%2 == 1 {
			p.FPs, p.Alerts = nil, nil
		}
		want, werr = json.Marshal(p)
		got, gerr = appendLogPut(nil, &p)
		require.Equal(t, werr != nil, gerr != nil, "errors: %v, %v", werr, gerr)
		if werr == nil {
			require.Equal(t, string(want), string(got))
		}
	})
}

// FuzzIncidentHeadJSON: appendStoredHead writes exactly what json.Marshal writes for the
// stored head of an incident, or fails where it fails.
func FuzzIncidentHeadJSON(f *testing.F) {
	f.Add("inc-1", "alert/X/1", "cluster", "eu-1", "critical", "", "X in eu-1", "X: <b>\"q\"</b>", "", "open", "", int64(1e18), int64(0), 3, 7, uint16(0))
	f.Add("", "", "", "", "", "t", "", "", "img", "resolved", "me", int64(-9e18), int64(4e18), -1, 0, uint16(0xffff))
	f.Fuzz(func(t *testing.T, id, key, scope, cluster, sev, team, root, expl, image, state, who string, at, at2 int64, rev, n int, shape uint16) {
		inc := &Incident{
			ID: id, Group: Group{Key: key, Scope: scope, Severity: sev, Team: team, RootCause: root, Explanation: expl, Image: image},
			State: state, OpenedAt: time.Unix(0, at).In(time.FixedZone("z", int(shape)*7)), UpdatedAt: time.Unix(0, at2).UTC(), Revision: rev,
			AckedBy: who, MergedInto: team, Remediation: image,
		}
		if shape&1 != 0 {
			inc.Clusters = []string{cluster, root}
		} else if shape&2 != 0 {
			inc.Clusters = []string{}
		}
		if shape&4 != 0 {
			inc.ResolvedAt = time.Unix(at2, 0) // seconds: years past 9999
		}
		if shape&8 != 0 {
			inc.ClearSince, inc.AckedAt = inc.UpdatedAt, inc.OpenedAt
		}
		if shape&16 != 0 {
			inc.Labels = map[string]string{"alertname": IncidentAlertName, amconfig.LabelIncidentKey: id, "severity": sev}
		}
		if shape&32 != 0 {
			inc.FormerLabels = []map[string]string{{"severity": sev, cluster: root}, nil}
		}
		var names map[string]int
		if shape&64 != 0 {
			names = map[string]int{cluster: n, root: rev}
		} else if shape&128 != 0 {
			names = map[string]int{}
		}
		want, werr := json.Marshal(storedIncident{Incident: inc, AlertsApart: true, AlertNames: names})
		got, gerr := appendStoredHead([]byte("x"), inc, names)
		require.Equal(t, werr != nil, gerr != nil, "errors: %v, %v", werr, gerr)
		if werr == nil {
			require.Equal(t, "x"+string(want), string(got))
		}
	})
}

// An incident's stored head leaves its alerts out (they are stored apart): the same bytes with
// or without them, and the same error where a time cannot be written (json.Marshal's path).
func TestStoredHeadWithoutAlerts(t *testing.T) {
	for _, opened := range []time.Time{time.Unix(1e9, 0), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)} {
		bare := &Incident{ID: "inc-1", Group: Group{Key: "alert/X/1", Clusters: []string{"eu-1"}}, State: StateOpen, OpenedAt: opened, Revision: 1}
		full := *bare
		full.Alerts = []Alert{alert(0, "alertname", "X", "cluster", "eu-1")}
		want, werr := appendStoredHead(nil, bare, map[string]int{"X": 1})
		got, gerr := appendStoredHead(nil, &full, map[string]int{"X": 1})
		require.Equal(t, werr, gerr)
		require.Equal(t, string(want), string(got))
		require.Len(t, full.Alerts, 1, "the incident itself is left as it was")
	}
}

package correlate

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestTrackerLifecycle(t *testing.T) {
	tr := NewTracker(5*time.Minute, DefaultRules, nil)
	nodes := alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-2", "severity", "critical")
	groups := func(as ...Alert) []Group { return Correlate(as, nil, DefaultRules) }

	ch := tr.Update(t0, groups(nodes))
	require.Len(t, ch, 1)
	inc := ch[0]
	require.Equal(t, StateOpen, inc.State)
	require.Equal(t, 1, inc.Revision)
	id := inc.ID

	// Nothing changed: nothing to send.
	require.Empty(t, tr.Update(t0.Add(time.Minute), groups(nodes)))

	// Flapping: the alert goes away and comes back within the hysteresis; same incident.
	ch = tr.Update(t0.Add(2*time.Minute), nil)
	require.Len(t, ch, 1)
	require.Equal(t, StateOpen, ch[0].State)
	require.False(t, ch[0].ClearSince.IsZero())
	require.Empty(t, tr.Update(t0.Add(4*time.Minute), nil), "still within the hysteresis")
	ch = tr.Update(t0.Add(5*time.Minute), groups(nodes))
	require.Len(t, ch, 1)
	require.Equal(t, id, ch[0].ID)
	require.True(t, ch[0].ClearSince.IsZero())

	// Acknowledged, then resolved after staying clear for ResolveAfter.
	_, err := tr.Acknowledge(id, "alice", t0.Add(6*time.Minute))
	require.NoError(t, err)
	require.Equal(t, StateAcknowledged, tr.Active()[0].State)
	tr.Update(t0.Add(7*time.Minute), nil)
	require.Empty(t, tr.Update(t0.Add(11*time.Minute), nil))
	ch = tr.Update(t0.Add(12*time.Minute), nil)
	require.Len(t, ch, 1)
	require.Equal(t, StateResolved, ch[0].State)
	require.Equal(t, "alice", ch[0].AckedBy)
	require.Empty(t, tr.Active())

	// It comes back after resolving: a new incident.
	ch = tr.Update(t0.Add(20*time.Minute), groups(nodes))
	require.Len(t, ch, 1)
	require.NotEqual(t, id, ch[0].ID)
	_, err = tr.Acknowledge("inc-nope", "bob", t0)
	require.ErrorContains(t, err, "incident inc-nope: not active")
}

func TestTrackerMergesIntoRollout(t *testing.T) {
	tr := NewTracker(5*time.Minute, DefaultRules, nil)
	a := alert(0, "alertname", "FleetWorkloadCrashLooping", "cluster", "eu-1", "namespace", "catalog", "owner_kind", "ReplicaSet", "owner_name", "search-5d8f7c9b6")
	b := alert(time.Minute, "alertname", "FleetWorkloadCrashLooping", "cluster", "us-1", "namespace", "catalog", "owner_kind", "ReplicaSet", "owner_name", "search-5d8f7c9b6")
	first := tr.Update(t0, Correlate([]Alert{a}, nil, DefaultRules))[0]
	require.Equal(t, "failures/eu-1", first.Key)
	ch := tr.Update(t0.Add(time.Minute), Correlate([]Alert{a, b}, nil, DefaultRules))
	require.Len(t, ch, 2)
	byKey := map[string]*Incident{}
	for _, i := range ch {
		byKey[i.Key] = i
	}
	rollout := byKey["rollout/catalog/search"]
	require.NotNil(t, rollout)
	require.Equal(t, StateResolved, byKey["failures/eu-1"].State, "merged incidents resolve at once")
	require.Equal(t, rollout.ID, byKey["failures/eu-1"].MergedInto)
}

func TestTrackerContinuesAfterRestart(t *testing.T) {
	tr := NewTracker(5*time.Minute, DefaultRules, nil)
	nodes := alert(0, "alertname", "FleetClusterNodesNotReady", "cluster", "eu-2")
	inc := tr.Update(t0, Correlate([]Alert{nodes}, nil, DefaultRules))[0]
	again := NewTracker(5*time.Minute, DefaultRules, []*Incident{inc})
	require.Empty(t, again.Update(t0.Add(time.Minute), Correlate([]Alert{nodes}, nil, DefaultRules)), "no re-page after a restart")
}

func TestTrackerKeepsFormerLabels(t *testing.T) {
	tr := NewTracker(5*time.Minute, DefaultRules, nil)
	warn := alert(0, "alertname", "FleetWorkloadCrashLooping", "cluster", "eu-1", "namespace", "a", "owner_name", "x", "severity", "warning")
	crit := alert(0, "alertname", "FleetClusterCrashLooping", "cluster", "eu-1", "severity", "critical")
	inc := tr.Update(t0, Correlate([]Alert{warn}, nil, DefaultRules))[0]
	require.Equal(t, "warning", inc.Labels["severity"])
	require.Empty(t, inc.FormerLabels)
	inc = tr.Update(t0.Add(time.Minute), Correlate([]Alert{warn, crit}, nil, DefaultRules))[0]
	require.Equal(t, "critical", inc.Labels["severity"])
	require.Len(t, inc.FormerLabels, 1)
	require.Equal(t, "warning", inc.FormerLabels[0]["severity"])
	require.Equal(t, "eu-1", inc.Labels["cluster"])
}

// An evaluation opens all its new incidents at one time. With IDs unique only by their 4
// random bytes, the 50,000 incidents of the alert bench's storm shared an ID about once a run,
// and one incident overwrote the other in memory and in the store: its alerts were in no
// active incident. The time part of each ID must differ.
func TestTrackerIDsUniqueAtOneInstant(t *testing.T) {
	tr := NewTracker(5*time.Minute, DefaultRules, nil)
	var as []Alert
	for i := range 1000 {
		as = append(as, alert(0, "alertname", "Something", "cluster", "c1", "n", strconv.Itoa(i)))
	}
	ch := tr.Update(t0, Correlate(as, nil, DefaultRules))
	require.Len(t, ch, 1000)
	times := map[string]bool{}
	for _, inc := range ch {
		require.Regexp(t, `^inc-[0-9a-f]{24}$`, inc.ID)
		times[inc.ID[len("inc-"):len("inc-")+16]] = true
	}
	require.Len(t, times, 1000, "IDs of the incidents opened at one time must not rely on their random bytes to differ")
	require.Len(t, tr.Active(), 1000)
}

package correlate

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/fleetwatch/fleetwatch/correlate/amconfig"
	"github.com/fleetwatch/fleetwatch/internal/ident"
)

// Incident states.
const (
	StateOpen         = "open"
	StateAcknowledged = "acknowledged"
	StateResolved     = "resolved"
)

// Incident is a Group with an identity and a lifecycle. Field names are the JSON API's.
type Incident struct {
	ID string `json:"id"`
	Group
	State      string    `json:"state"`
	OpenedAt   time.Time `json:"opened_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	ResolvedAt time.Time `json:"resolved_at,omitzero"`
	// ClearSince is when the incident's alerts last went away; it resolves once they stay
	// away for the hysteresis (Tracker.ResolveAfter). Zero while alerts are active.
	ClearSince time.Time `json:"clear_since,omitzero"`
	AckedBy    string    `json:"acked_by,omitempty"`
	AckedAt    time.Time `json:"acked_at,omitzero"`
	// MergedInto names the incident that took this one's alerts over, when it resolved so.
	MergedInto string `json:"merged_into,omitempty"`
	// Revision counts changes; an update is sent on when it grows.
	Revision int `json:"revision"`
	// Labels are the routing labels of the incident's Alertmanager alert. When they change
	// (a warning becomes critical, a cluster incident becomes a fleet one), Alertmanager sees
	// a new alert, so the former label sets are kept to be sent as resolved.
	Labels       map[string]string   `json:"labels"`
	FormerLabels []map[string]string `json:"former_labels,omitempty"`
	// Remediation is what fleetwatch's remediation did about the incident, as it last said
	// (Engine.Remediated); it goes to Alertmanager as the "remediation" annotation.
	Remediation string `json:"remediation,omitempty"`
}

// routingLabels are the labels of the incident's Alertmanager alert.
func (i *Incident) routingLabels() map[string]string {
	ls := map[string]string{
		amconfig.LabelAlertName:   IncidentAlertName,
		amconfig.LabelIncidentKey: i.Key, // what the problem is: the same on every replica
		amconfig.LabelSeverity:    i.Severity,
		amconfig.LabelScope:       i.Scope,
	}
	if i.Scope == amconfig.ScopeCluster && len(i.Clusters) == 1 {
		ls[amconfig.LabelCluster] = i.Clusters[0]
	}
	if i.Team != "" {
		ls[amconfig.LabelTeam] = i.Team
	}
	return ls
}

// relabel updates Labels, keeping the former ones.
func (i *Incident) relabel() {
	ls := i.routingLabels()
	if i.Labels != nil && !maps.Equal(i.Labels, ls) {
		// Clipped: a copy of the incident (Tracker.plan) must not write into the backing
		// array of the original's former labels.
		i.FormerLabels = append(slices.Clip(i.FormerLabels), i.Labels)
	}
	i.Labels = ls
}

// Active reports whether the incident is not resolved.
func (i *Incident) Active() bool { return i.State != StateResolved }

// Tracker keeps the incidents: every Update matches the current groups to the active
// incidents by key, opens new ones, updates changed ones and resolves those whose alerts
// stayed away for ResolveAfter. It is not safe for concurrent use; the engine serializes.
type Tracker struct {
	ResolveAfter time.Duration
	active       map[string]*Incident // by group key
	clear        map[string]bool      // keys of the active incidents clearing (ClearSince set)
	ids          ident.IDs
	fingerprint  func(Alert) uint64
}

// NewTracker returns a tracker that continues the given active incidents (from the store).
func NewTracker(resolveAfter time.Duration, r Rules, active []*Incident) *Tracker {
	t := &Tracker{ResolveAfter: resolveAfter, active: map[string]*Incident{}, clear: map[string]bool{}, fingerprint: r.fingerprint}
	for _, i := range active {
		if i.Active() {
			i.Alerts = r.withFingerprints(i.Alerts)
			t.commit(i)
		}
	}
	return t
}

// newID is time-ordered and unique: "inc-" + 8 bytes of time + 4 random bytes, in hex
// (ident.IDs: unique even for the tens of thousands of incidents one evaluation can open).
func (t *Tracker) newID(now time.Time) string { return t.ids.New("inc", now) }

// Active lists the active incidents, oldest first.
func (t *Tracker) Active() []*Incident {
	out := make([]*Incident, 0, len(t.active))
	for _, i := range t.active {
		out = append(out, i)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// Update applies the groups computed at now and returns the incidents that changed (opened,
// updated, resolved), each with its Revision raised.
func (t *Tracker) Update(now time.Time, groups []Group) []*Incident {
	changed := t.plan(now, groups)
	t.commit(changed...)
	return changed
}

// plan computes what Update would change without changing the tracker: every changed
// incident is a new value (a copy of the active one, or a new incident). The engine stores
// them first and commits them only once they are stored, so memory never runs ahead of the
// store.
func (t *Tracker) plan(now time.Time, groups []Group) []*Incident {
	byKey := make(map[string]*Group, len(groups))
	owner := map[uint64]string{}
	keys := make(map[string]bool, len(groups)+len(t.active))
	for i := range groups {
		g := &groups[i]
		byKey[g.Key], keys[g.Key] = g, true
		for _, a := range g.Alerts {
			owner[t.fingerprint(a)] = g.Key
		}
	}
	for k := range t.active {
		keys[k] = true
	}
	return t.planKeys(now, byKey, keys, func(a Alert) (string, bool) {
		k, ok := owner[t.fingerprint(a)]
		return k, ok
	})
}

// planKeys is plan for the groups of keys alone: groups holds every group (by key), owner
// returns the key of the group holding an alert. The incidents of the other keys are left as
// they are, but for those clearing, which may resolve with time.
func (t *Tracker) planKeys(now time.Time, groups map[string]*Group, keys map[string]bool, owner func(Alert) (string, bool)) []*Incident {
	var changed []*Incident
	planned := map[string]*Incident{} // by group key: the incidents of keys' groups
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		g := groups[k]
		if g == nil {
			continue
		}
		inc := t.active[k]
		switch {
		case inc == nil:
			inc = &Incident{ID: t.newID(now), Group: *g, State: StateOpen, OpenedAt: now, UpdatedAt: now, Revision: 1}
			inc.relabel()
			changed = append(changed, inc)
		case !t.sameGroup(inc.Group, *g) || !inc.ClearSince.IsZero():
			cp := *inc
			inc = &cp
			changed = append(changed, inc)
			inc.Group = *g
			inc.relabel()
			inc.ClearSince = time.Time{}
			inc.UpdatedAt = now
			inc.Revision++
		}
		planned[k] = inc
	}
	// The incidents whose group is gone: those of keys, and those already clearing.
	var gone []string
	for k := range keys {
		if groups[k] == nil && t.active[k] != nil {
			gone = append(gone, k)
		}
	}
	for k := range t.clear {
		if !keys[k] && groups[k] == nil {
			gone = append(gone, k)
		}
	}
	for _, k := range gone {
		inc := t.active[k]
		// Its alerts went to another incident (e.g. a crash loop in one cluster that became
		// a fleet-wide rollout): resolved at once, pointing there.
		into := ""
		for _, a := range inc.Alerts {
			gk, ok := owner(a)
			if !ok {
				continue
			}
			if p := planned[gk]; p != nil {
				into = p.ID
			} else if p := t.active[gk]; p != nil {
				into = p.ID
			}
			if into != "" {
				break
			}
		}
		cp := *inc
		switch {
		case into != "":
			cp.MergedInto = into
			resolve(&cp, now)
		case cp.ClearSince.IsZero():
			cp.ClearSince = now
			cp.UpdatedAt = now
			cp.Revision++
		case now.Sub(cp.ClearSince) >= t.ResolveAfter:
			resolve(&cp, now)
		default:
			continue
		}
		changed = append(changed, &cp)
	}
	sort.Slice(changed, func(a, b int) bool { return changed[a].ID < changed[b].ID })
	return changed
}

// commit puts changed incidents (from plan, acknowledged or resolved) in place of the ones
// they change.
func (t *Tracker) commit(changed ...*Incident) {
	for _, inc := range changed {
		if inc.Active() {
			t.active[inc.Key] = inc
			if inc.ClearSince.IsZero() {
				delete(t.clear, inc.Key)
			} else {
				t.clear[inc.Key] = true
			}
		} else if cur := t.active[inc.Key]; cur != nil && cur.ID == inc.ID {
			delete(t.active, inc.Key)
			delete(t.clear, inc.Key)
		}
	}
}

// clearing reports whether an active incident's alerts went away and it waits out ResolveAfter.
func (t *Tracker) clearing() bool { return len(t.clear) > 0 }

func resolve(inc *Incident, now time.Time) {
	inc.State = StateResolved
	inc.ResolvedAt = now
	inc.UpdatedAt = now
	inc.Revision++
}

// ErrNotActive is returned for a change to an incident that is not active (resolved, or
// unknown to the tracker).
var ErrNotActive = errors.New("not active")

// find returns the active incident with the given ID, or nil.
func (t *Tracker) find(id string) *Incident {
	for _, inc := range t.active {
		if inc.ID == id {
			return inc
		}
	}
	return nil
}

// acknowledged returns a copy of an active incident acknowledged by who, without changing
// the tracker (see commit).
func (t *Tracker) acknowledged(id, who string, now time.Time) (*Incident, error) {
	inc := t.find(id)
	if inc == nil {
		return nil, fmt.Errorf("incident %s: %w", id, ErrNotActive)
	}
	cp := *inc
	cp.State = StateAcknowledged
	cp.AckedBy, cp.AckedAt = who, now
	cp.UpdatedAt = now
	cp.Revision++
	return &cp, nil
}

// remediated returns a copy of an active incident that says what remediation did, without
// changing the tracker (see commit); nil when it says so already.
func (t *Tracker) remediated(id, text string, now time.Time) (*Incident, error) {
	inc := t.find(id)
	if inc == nil {
		return nil, fmt.Errorf("incident %s: %w", id, ErrNotActive)
	}
	if inc.Remediation == text {
		return nil, nil
	}
	cp := *inc
	cp.Remediation = text
	cp.UpdatedAt = now
	cp.Revision++
	return &cp, nil
}

// resolved returns a copy of an active incident resolved by hand, without changing the
// tracker (see commit).
func (t *Tracker) resolved(id string, now time.Time) (*Incident, error) {
	inc := t.find(id)
	if inc == nil {
		return nil, fmt.Errorf("incident %s: %w", id, ErrNotActive)
	}
	cp := *inc
	resolve(&cp, now)
	return &cp, nil
}

// Acknowledge marks an active incident acknowledged by who.
func (t *Tracker) Acknowledge(id, who string, now time.Time) (*Incident, error) {
	inc, err := t.acknowledged(id, who, now)
	if err != nil {
		return nil, err
	}
	t.commit(inc)
	return inc, nil
}

// Resolve resolves an active incident by hand; if its alerts are still active, the next
// Update opens a new incident for them.
func (t *Tracker) Resolve(id string, now time.Time) (*Incident, error) {
	inc, err := t.resolved(id, now)
	if err != nil {
		return nil, err
	}
	t.commit(inc)
	return inc, nil
}

// sameGroup reports whether an update would change what an incident says.
func (t *Tracker) sameGroup(a, b Group) bool {
	if a.Scope != b.Scope || a.Severity != b.Severity || a.Team != b.Team || a.RootCause != b.RootCause ||
		a.Explanation != b.Explanation || a.Image != b.Image || !slices.Equal(a.Clusters, b.Clusters) || len(a.Alerts) != len(b.Alerts) {
		return false
	}
	for i := range a.Alerts {
		if t.fingerprint(a.Alerts[i]) != t.fingerprint(b.Alerts[i]) {
			return false
		}
	}
	return true
}

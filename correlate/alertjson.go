package correlate

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/fleetwatch/fleetwatch/internal/jsonenc"
)

// appendAlert appends a's JSON, byte for byte what json.Marshal writes for it, without
// reflection: every alert taken in is encoded into the alert log, and every alert of a changed
// incident into the store, and through reflection that was a fifth of the intake's CPU
// (FuzzAlertJSON compares the two).
func appendAlert(b []byte, a *Alert) ([]byte, error) {
	n := len(b)
	b = append(b, `{"labels":`...)
	b = appendLabels(b, a.Labels)
	if len(a.Annotations) > 0 {
		b = append(b, `,"annotations":`...)
		b = appendLabels(b, a.Annotations)
	}
	b = append(b, `,"startsAt":`...)
	b, ok := appendTime(b, a.StartsAt)
	if ok && !a.EndsAt.IsZero() {
		b = append(b, `,"endsAt":`...)
		b, ok = appendTime(b, a.EndsAt)
	}
	if !ok {
		// json.Marshal's error (a year or a zone it cannot write).
		v, err := json.Marshal(a)
		return append(b[:n], v...), err
	}
	if a.GeneratorURL != "" {
		b = append(b, `,"generatorURL":`...)
		b = jsonenc.AppendString(b, a.GeneratorURL)
	}
	b = append(b, `,"source":`...)
	b = jsonenc.AppendString(b, a.Source)
	return append(b, '}'), nil
}

// appendTime appends t quoted, as time.Time.MarshalJSON writes it: AppendText is the same
// strict RFC 3339. ok is false (and b as it was) where MarshalJSON fails: a year it cannot
// write in four digits, a zone a day or more off.
func appendTime(b []byte, t time.Time) (_ []byte, ok bool) {
	out, err := t.AppendText(append(b, '"'))
	if err != nil {
		return b, false
	}
	return append(out, '"'), true
}

// appendLabels appends a label map as json.Marshal does: sorted by name, null when nil.
func appendLabels(b []byte, m map[string]string) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	var buf [24]string
	names := buf[:0]
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	b = append(b, '{')
	for i, k := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonenc.AppendString(b, k)
		b = append(b, ':')
		b = jsonenc.AppendString(b, m[k])
	}
	return append(b, '}')
}

// appendLogPut appends p as json.Marshal does.
func appendLogPut(b []byte, p *logPut) ([]byte, error) {
	n := len(b)
	b, ok := appendTime(append(b, `{"now":`...), p.Now)
	if !ok {
		v, err := json.Marshal(p)
		return append(b[:n], v...), err
	}
	b = append(b, `,"fps":`...)
	if p.FPs == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i, fp := range p.FPs {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, fp, 10)
		}
		b = append(b, ']')
	}
	b = append(b, `,"alerts":`...)
	if p.Alerts == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range p.Alerts {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendAlert(b, &p.Alerts[i]); err != nil {
				return b, err
			}
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

// appendStoredHead appends json.Marshal's bytes for storedIncident{inc, true, names} of inc
// without its alerts, which are stored apart (its head, what every changed incident writes;
// through reflection that was a third of saving one). inc's alerts are not read.
func appendStoredHead(b []byte, inc *Incident, names map[string]int) ([]byte, error) {
	n, ok := len(b), true
	str := func(key, v string) {
		b = append(b, key...)
		b = jsonenc.AppendString(b, v)
	}
	tm := func(key string, t time.Time) {
		if ok {
			b, ok = appendTime(append(b, key...), t)
		}
	}
	str(`{"id":`, inc.ID)
	str(`,"key":`, inc.Key)
	str(`,"scope":`, inc.Scope)
	b = append(b, `,"clusters":`...)
	b = jsonenc.AppendStrings(b, inc.Clusters)
	str(`,"severity":`, inc.Severity)
	if inc.Team != "" {
		str(`,"team":`, inc.Team)
	}
	str(`,"root_cause":`, inc.RootCause)
	str(`,"explanation":`, inc.Explanation)
	if inc.Image != "" {
		str(`,"image":`, inc.Image)
	}
	str(`,"alerts":null,"state":`, inc.State)
	tm(`,"opened_at":`, inc.OpenedAt)
	tm(`,"updated_at":`, inc.UpdatedAt)
	if !inc.ResolvedAt.IsZero() {
		tm(`,"resolved_at":`, inc.ResolvedAt)
	}
	if !inc.ClearSince.IsZero() {
		tm(`,"clear_since":`, inc.ClearSince)
	}
	if inc.AckedBy != "" {
		str(`,"acked_by":`, inc.AckedBy)
	}
	if !inc.AckedAt.IsZero() {
		tm(`,"acked_at":`, inc.AckedAt)
	}
	if inc.MergedInto != "" {
		str(`,"merged_into":`, inc.MergedInto)
	}
	b = append(b, `,"revision":`...)
	b = strconv.AppendInt(b, int64(inc.Revision), 10)
	b = append(b, `,"labels":`...)
	b = appendLabels(b, inc.Labels)
	if len(inc.FormerLabels) > 0 {
		b = append(b, `,"former_labels":[`...)
		for i, ls := range inc.FormerLabels {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendLabels(b, ls)
		}
		b = append(b, ']')
	}
	if inc.Remediation != "" {
		str(`,"remediation":`, inc.Remediation)
	}
	b = append(b, `,"alerts_apart":true`...)
	if len(names) > 0 {
		b = append(b, `,"alert_names":{`...)
		keys := slices.Sorted(maps.Keys(names))
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonenc.AppendString(b, k)
			b = append(b, ':')
			b = strconv.AppendInt(b, int64(names[k]), 10)
		}
		b = append(b, '}')
	}
	if !ok {
		head := *inc
		head.Alerts = nil
		v, err := json.Marshal(storedIncident{Incident: &head, AlertsApart: true, AlertNames: names})
		return append(b[:n], v...), err
	}
	return append(b, '}'), nil
}

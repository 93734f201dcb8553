package correlate

import (
	"encoding/json"
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
	if !jsonTime(a.StartsAt) || !a.EndsAt.IsZero() && !jsonTime(a.EndsAt) {
		// json.Marshal's error (a year it cannot write).
		v, err := json.Marshal(a)
		return append(b, v...), err
	}
	b = append(b, `{"labels":`...)
	b = appendLabels(b, a.Labels)
	if len(a.Annotations) > 0 {
		b = append(b, `,"annotations":`...)
		b = appendLabels(b, a.Annotations)
	}
	b = append(b, `,"startsAt":"`...)
	b = a.StartsAt.AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if !a.EndsAt.IsZero() {
		b = append(b, `,"endsAt":"`...)
		b = a.EndsAt.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
	}
	if a.GeneratorURL != "" {
		b = append(b, `,"generatorURL":`...)
		b = jsonenc.AppendString(b, a.GeneratorURL)
	}
	b = append(b, `,"source":`...)
	b = jsonenc.AppendString(b, a.Source)
	return append(b, '}'), nil
}

// jsonTime reports whether time.Time.MarshalJSON writes t (RFC 3339 wants a four-digit year
// and a zone offset of less than a day).
func jsonTime(t time.Time) bool {
	if y := t.Year(); y < 0 || y > 9999 {
		return false
	}
	_, off := t.Zone()
	return off > -24*60*60 && off < 24*60*60
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
	if !jsonTime(p.Now) {
		v, err := json.Marshal(p)
		return append(b, v...), err
	}
	b = append(b, `{"now":"`...)
	b = p.Now.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","fps":`...)
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

package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
)

// The holder's memory of which series back firing alerts lives in memory, so an alert held
// for a silent cluster when fleetwatch restarts would be forgotten: after the restart its
// series are gone and nothing says it was firing. The state file keeps, per alerting rule,
// the series behind its firing alerts and when held ones vanished; New loads it, and the
// first evaluation after the restart holds them again (and the rules manager restores their
// active-since time from ALERTS_FOR_STATE).

// savedRule is one rule's part of the state file.
type savedRule struct {
	Rule   string        `json:"rule"` // ruleKey
	Series []savedSeries `json:"series"`
}

type savedSeries struct {
	Labels map[string]string `json:"labels"`
	Value  float64           `json:"value"`
	// Alert is the alert labels hash the series fires as (alertHash).
	Alert uint64 `json:"alert"`
	// GoneMs is when the series vanished (Unix ms), 0 while it is present.
	GoneMs int64 `json:"gone_ms,omitempty"`
}

// loadState reads the state file; a missing file is an empty state.
func (h *holder) loadState() error {
	if h.statePath == "" {
		return nil
	}
	b, err := os.ReadFile(h.statePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read alert hold state: %w", err)
	}
	var saved []savedRule
	if err := json.Unmarshal(b, &saved); err != nil {
		return fmt.Errorf("read alert hold state %s: %w", h.statePath, err)
	}
	h.mtx.Lock()
	defer h.mtx.Unlock()
	for _, sr := range saved {
		rh := &ruleHold{last: map[uint64]promql.Sample{}, firing: map[uint64]bool{}, gone: map[uint64]time.Time{},
			alertOf: map[uint64]uint64{}, restored: map[uint64]bool{}}
		for _, s := range sr.Series {
			ls := labels.FromMap(s.Labels)
			k := seriesHash(ls)
			rh.last[k] = promql.Sample{Metric: ls, F: s.Value}
			rh.alertOf[k] = s.Alert
			rh.firing[s.Alert] = true
			rh.restored[s.Alert] = true
			if s.GoneMs != 0 {
				rh.gone[k] = time.UnixMilli(s.GoneMs)
			}
		}
		h.rules[sr.Rule] = rh
	}
	h.savedDigest = digestState(saved)
	return nil
}

// saveState writes the state file when the set of series behind firing alerts (or when a
// held one vanished) changed since the last write. Values are written but do not count as a
// change: a held series comes back with the value it had when the set last changed.
func (h *holder) saveState() error {
	if h.statePath == "" {
		return nil
	}
	h.mtx.Lock()
	keys := make([]string, 0, len(h.rules))
	for k := range h.rules {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var saved []savedRule
	for _, key := range keys {
		rh := h.rules[key]
		var sr savedRule
		for k, s := range rh.last {
			ah, ok := rh.alertOf[k]
			if !ok || !rh.firing[ah] {
				continue
			}
			ss := savedSeries{Labels: s.Metric.Map(), Value: s.F, Alert: ah}
			if g, ok := rh.gone[k]; ok {
				ss.GoneMs = g.UnixMilli()
			}
			sr.Series = append(sr.Series, ss)
		}
		if len(sr.Series) == 0 {
			continue
		}
		slices.SortFunc(sr.Series, func(a, b savedSeries) int { return compareUint(a.Alert, b.Alert) })
		sr.Rule = key
		saved = append(saved, sr)
	}
	d := digestState(saved)
	if d == h.savedDigest {
		h.mtx.Unlock()
		return nil
	}
	h.mtx.Unlock()
	b, err := json.Marshal(saved)
	if err != nil {
		return err
	}
	tmp := h.statePath + ".tmp"
	if err := writeFileSync(tmp, b); err != nil {
		return fmt.Errorf("write alert hold state: %w", err)
	}
	if err := os.Rename(tmp, h.statePath); err != nil {
		return fmt.Errorf("write alert hold state: %w", err)
	}
	h.mtx.Lock()
	h.savedDigest = d
	h.mtx.Unlock()
	return nil
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// digestState identifies the saved series and vanish times, not their values.
func digestState(saved []savedRule) uint64 {
	h := fnv.New64a()
	for _, sr := range saved {
		h.Write([]byte(sr.Rule))
		for _, s := range sr.Series {
			h.Write([]byte(strconv.FormatUint(s.Alert, 16)))
			h.Write([]byte(strconv.FormatInt(s.GoneMs, 16)))
		}
		h.Write([]byte{0xff})
	}
	return h.Sum64()
}

func compareUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

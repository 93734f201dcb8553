package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
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
// change: a held series comes back with the value it had when the set last changed. It runs
// after every group evaluation, so the unchanged case only sums a digest.
func (h *holder) saveState() error {
	if h.statePath == "" {
		return nil
	}
	h.saveMtx.Lock() // groups evaluate concurrently; one writer of the file at a time
	defer h.saveMtx.Unlock()
	h.mtx.Lock()
	var d uint64
	for key, rh := range h.rules {
		kh := hashString(key)
		for k, ah := range rh.alertOf {
			if rh.firing[ah] {
				d += entryDigest(kh, ah, goneMs(rh.gone, k))
			}
		}
	}
	if d == h.savedDigest {
		h.mtx.Unlock()
		return nil
	}
	var saved []savedRule
	for key, rh := range h.rules {
		sr := savedRule{Rule: key}
		for k, s := range rh.last {
			if ah := rh.alertOf[k]; rh.firing[ah] {
				sr.Series = append(sr.Series, savedSeries{Labels: s.Metric.Map(), Value: s.F, Alert: ah, GoneMs: goneMs(rh.gone, k)})
			}
		}
		if len(sr.Series) > 0 {
			saved = append(saved, sr)
		}
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

func goneMs(gone map[uint64]time.Time, k uint64) int64 {
	if g, ok := gone[k]; ok {
		return g.UnixMilli()
	}
	return 0
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

// digestState identifies the saved series and vanish times, not their values: a sum over
// the series, so the order they are listed in does not matter.
func digestState(saved []savedRule) uint64 {
	var d uint64
	for _, sr := range saved {
		kh := hashString(sr.Rule)
		for _, s := range sr.Series {
			d += entryDigest(kh, s.Alert, s.GoneMs)
		}
	}
	return d
}

func hashString(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// entryDigest mixes one series' identity (splitmix64's finalizer), so that sums over
// different sets rarely collide.
func entryDigest(rule, alert uint64, gone int64) uint64 {
	x := rule ^ alert*0x9e3779b97f4a7c15 ^ uint64(gone)*0xbf58476d1ce4e5b9
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

package rules

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/tsdb/fileutil"
)

// The holder's memory of which series back firing alerts lives in memory, so an alert held
// for a silent cluster when fleetwatch restarts would be forgotten: after the restart its
// series are gone and nothing says it was firing. The state file keeps, per alerting rule,
// the series behind its firing alerts; New loads it, and the first evaluation after the
// restart holds them again (and the rules manager restores their active-since time from
// ALERTS_FOR_STATE).
//
// The file is replaced whole: written to a temporary file in the same directory, fsynced,
// renamed over the previous one and the directory fsynced (Prometheus's tsdb/fileutil), so a
// crash or power cut at any point leaves either the previous state or the new one.

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
		rh := &ruleHold{last: map[uint64]promql.Sample{}, firing: map[uint64]bool{},
			alertOf: map[uint64]uint64{}, restored: map[uint64]bool{}}
		for _, s := range sr.Series {
			ls := labels.FromMap(s.Labels)
			k := seriesHash(ls)
			rh.last[k] = promql.Sample{Metric: ls, F: s.Value}
			rh.alertOf[k] = s.Alert
			rh.firing[s.Alert] = true
			rh.restored[s.Alert] = true
		}
		h.rules[sr.Rule] = rh
	}
	h.savedDigest = digestState(saved)
	return nil
}

// saveState writes the state file when the set of series behind firing alerts changed since
// the last write. Values are written but do not count as a change: a held series comes back
// with the value it had when the set last changed. It runs after every group evaluation, so
// the unchanged case only sums a digest. When the write fails, the previous file is left as
// it was and the next evaluation tries again.
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
		for _, ah := range rh.alertOf {
			if rh.firing[ah] {
				d += entryDigest(kh, ah)
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
				sr.Series = append(sr.Series, savedSeries{Labels: s.Metric.Map(), Value: s.F, Alert: ah})
			}
		}
		if len(sr.Series) > 0 {
			saved = append(saved, sr)
		}
	}
	h.mtx.Unlock()
	b, err := json.Marshal(saved)
	if err != nil {
		return fmt.Errorf("encode alert hold state: %w", err)
	}
	if err := h.replaceFile(b); err != nil {
		return fmt.Errorf("write alert hold state %s: %w", h.statePath, err)
	}
	h.mtx.Lock()
	h.savedDigest = d
	h.mtx.Unlock()
	return nil
}

// replaceFile replaces the state file with b: a temporary file in the same directory,
// fsynced, renamed over the state file, then the directory fsynced so that the rename itself
// is durable (fileutil.Rename). On failure the temporary file is removed and the state file is
// untouched.
func (h *holder) replaceFile(b []byte) (err error) {
	fsyncFile, rename := h.fsyncFile, h.rename
	if fsyncFile == nil {
		fsyncFile = (*os.File).Sync
	}
	if rename == nil {
		rename = fileutil.Rename
	}
	f, err := os.CreateTemp(filepath.Dir(h.statePath), "."+filepath.Base(h.statePath)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := fsyncFile(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return rename(tmp, h.statePath)
}

// digestState identifies the saved series, not their values: a sum over the series, so the
// order they are listed in does not matter.
func digestState(saved []savedRule) uint64 {
	var d uint64
	for _, sr := range saved {
		kh := hashString(sr.Rule)
		for _, s := range sr.Series {
			d += entryDigest(kh, s.Alert)
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
func entryDigest(rule, alert uint64) uint64 {
	x := rule ^ alert*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

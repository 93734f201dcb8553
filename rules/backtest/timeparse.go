package backtest

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// ParseTime reads a time as the backtest's --from and --to take it: "now", a duration before
// now ("-24h", "-7d", also "now-24h"), RFC 3339 ("2025-01-02T15:04:05Z") or Unix seconds
// ("1735830245", "1735830245.5").
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "now-") || strings.HasPrefix(s, "-"):
		d, err := model.ParseDuration(s[strings.IndexByte(s, '-')+1:])
		if err != nil {
			return time.Time{}, fmt.Errorf("%q: not a duration before now: %w", s, err)
		}
		return now.Add(-time.Duration(d)), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) && f >= 0 && f < 1<<35 {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(math.Round(frac*1e9))), nil
	}
	return time.Time{}, fmt.Errorf("%q: not a time; use RFC 3339 (2025-01-02T15:04:05Z), Unix seconds, \"now\" or a duration before now (-24h)", s)
}

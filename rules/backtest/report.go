package backtest

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// WriteTable writes one line per alert rule and cluster.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ALERT\tCLUSTER\tFIRED\tFIRING\tLONGEST\tPENDING ONLY\tACTIVE AT END")
	for _, a := range r.Alerts {
		cluster := a.Cluster
		if cluster == "" {
			cluster = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\n", a.Alert, cluster, a.Fired, duration(a.Firing), duration(a.Longest), a.PendingOnly, a.ActiveAtEnd)
	}
	return tw.Flush()
}

// duration writes a duration to the second, "-" for none.
func duration(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return d.Round(time.Second).String()
}

// jsonReport is the report as `--format json` writes it: durations in seconds, times in
// RFC 3339.
type jsonReport struct {
	From            time.Time     `json:"from"`
	To              time.Time     `json:"to"`
	IntervalSeconds float64       `json:"interval_seconds"`
	Steps           int           `json:"steps"`
	Groups          int           `json:"groups"`
	Rules           int           `json:"rules"`
	Clusters        []string      `json:"clusters"`
	RecordedSamples int64         `json:"recorded_samples"`
	NoHistory       bool          `json:"no_history"`
	ElapsedSeconds  float64       `json:"elapsed_seconds"`
	Alerts          []jsonAlert   `json:"alerts"`
	Failures        []RuleFailure `json:"failures"`
}

type jsonAlert struct {
	Alert                string        `json:"alert"`
	Group                string        `json:"group"`
	File                 string        `json:"file"`
	Cluster              string        `json:"cluster"`
	Fired                int           `json:"fired"`
	FiringSeconds        float64       `json:"firing_seconds"`
	LongestFiringSeconds float64       `json:"longest_firing_seconds"`
	PendingOnly          int           `json:"pending_only"`
	ActiveAtEnd          int           `json:"active_at_end"`
	Episodes             []jsonEpisode `json:"episodes"`
}

type jsonEpisode struct {
	Labels     map[string]string `json:"labels"`
	ActiveAt   time.Time         `json:"active_at"`
	FiredAt    *time.Time        `json:"fired_at,omitempty"`
	ResolvedAt *time.Time        `json:"resolved_at,omitempty"`
}

// WriteJSON writes the report as one JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	out := jsonReport{
		From: r.From.UTC(), To: r.To.UTC(), IntervalSeconds: r.Interval.Seconds(),
		Steps: r.Steps, Groups: r.Groups, Rules: r.Rules, Clusters: r.Clusters,
		RecordedSamples: r.RecordedSamples, NoHistory: r.NoHistory, ElapsedSeconds: r.Elapsed.Seconds(),
		Alerts: []jsonAlert{}, Failures: r.Failures,
	}
	if out.Clusters == nil {
		out.Clusters = []string{}
	}
	if out.Failures == nil {
		out.Failures = []RuleFailure{}
	}
	for _, a := range r.Alerts {
		ja := jsonAlert{
			Alert: a.Alert, Group: a.Group, File: a.File, Cluster: a.Cluster, Fired: a.Fired,
			FiringSeconds: a.Firing.Seconds(), LongestFiringSeconds: a.Longest.Seconds(),
			PendingOnly: a.PendingOnly, ActiveAtEnd: a.ActiveAtEnd, Episodes: []jsonEpisode{},
		}
		for _, e := range a.Episodes {
			je := jsonEpisode{Labels: e.Labels.Map(), ActiveAt: e.ActiveAt.UTC()}
			if !e.FiredAt.IsZero() {
				t := e.FiredAt.UTC()
				je.FiredAt = &t
			}
			if !e.ResolvedAt.IsZero() {
				t := e.ResolvedAt.UTC()
				je.ResolvedAt = &t
			}
			ja.Episodes = append(ja.Episodes, je)
		}
		out.Alerts = append(out.Alerts, ja)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

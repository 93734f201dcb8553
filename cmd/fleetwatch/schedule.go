package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/fleetwatch/fleetwatch/schedule"
)

// scheduleCmd is `fleetwatch schedule place|whatif`: clients of a running fleetwatch's
// placement API that print a table.
type scheduleCmd struct {
	place, whatif *kingpin.CmdClause
	url           string
	timeout       time.Duration
	jsonOut       bool

	// place
	workload, cpu, memory, mode string
	replicas, clusters          int
	weights                     map[string]string

	// both
	fail, compliance, regions, providers, tiers, exclude, only, userRegions []string
	maxLatency                                                              time.Duration
}

func newScheduleCmd(app *kingpin.Application) *scheduleCmd {
	c := &scheduleCmd{weights: map[string]string{}}
	cmd := app.Command("schedule", "Cross-cluster placement and what-if capacity, asked of a running fleetwatch.")
	cmd.Flag("url", "fleetwatch's base URL.").Default("http://localhost:9095").StringVar(&c.url)
	cmd.Flag("timeout", "How long to wait for the answer.").Default("30s").DurationVar(&c.timeout)
	cmd.Flag("json", "Print the API's JSON answer instead of a table.").BoolVar(&c.jsonOut)
	constraints := func(cc *kingpin.CmdClause) {
		cc.Flag("compliance", "Compliance tag every cluster must have (repeatable).").StringsVar(&c.compliance)
		cc.Flag("region", "Allowed region (repeatable).").StringsVar(&c.regions)
		cc.Flag("provider", "Allowed provider (repeatable).").StringsVar(&c.providers)
		cc.Flag("tier", "Allowed tier (repeatable).").StringsVar(&c.tiers)
		cc.Flag("exclude", "Cluster never to use (repeatable).").StringsVar(&c.exclude)
		cc.Flag("only", "Use only these clusters (repeatable).").StringsVar(&c.only)
		cc.Flag("user-region", "Where the workload's users are, for latency (repeatable).").StringsVar(&c.userRegions)
		cc.Flag("max-latency", "Highest latency allowed to every --user-region.").DurationVar(&c.maxLatency)
		cc.Flag("weight", "Score weight, e.g. --weight cost=2 (free_capacity, cost, latency, saturation, spread).").StringMapVar(&c.weights)
	}
	c.place = cmd.Command("place", "Decide where a workload's replicas go, with the reason for every cluster.")
	c.place.Flag("workload", "Name of the workload (namespace/name), only echoed.").StringVar(&c.workload)
	c.place.Flag("replicas", "Replicas to place.").Required().IntVar(&c.replicas)
	c.place.Flag("cpu", "CPU each replica requests (a Kubernetes quantity: 500m, 2).").Default("0").StringVar(&c.cpu)
	c.place.Flag("memory", "Memory each replica requests (a Kubernetes quantity: 512Mi, 2Gi).").Default("0").StringVar(&c.memory)
	c.place.Flag("mode", "divided: split the replicas over clusters; clusters: pick --clusters clusters that each run all replicas.").Default(schedule.ModeDivided).EnumVar(&c.mode, schedule.ModeDivided, schedule.ModeClusters)
	c.place.Flag("clusters", "Clusters to pick (mode clusters), or at most how many to spread over (mode divided).").IntVar(&c.clusters)
	constraints(c.place)
	c.whatif = cmd.Command("whatif", "If these clusters fail now, can the rest of the fleet absorb their Running and Pending pods, and where would they go?")
	c.whatif.Flag("fail", "A cluster that fails (repeatable).").Required().StringsVar(&c.fail)
	constraints(c.whatif)
	return c
}

func (c *scheduleCmd) run(cmd string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.do(ctx, cmd, os.Stdout)
}

func (c *scheduleCmd) constraints() (schedule.Constraints, map[string]float64, error) {
	k := schedule.Constraints{Compliance: c.compliance, Regions: c.regions, Providers: c.providers, Tiers: c.tiers,
		ExcludeClusters: c.exclude, Clusters: c.only, UserRegions: c.userRegions, MaxLatency: schedule.Duration(c.maxLatency)}
	w := map[string]float64{}
	for name, v := range c.weights {
		var f float64
		if _, err := fmt.Sscan(v, &f); err != nil {
			return k, nil, fmt.Errorf("--weight %s=%s: not a number", name, v)
		}
		w[name] = f
	}
	return k, w, nil
}

func (c *scheduleCmd) do(ctx context.Context, cmd string, out io.Writer) error {
	k, w, err := c.constraints()
	if err != nil {
		return err
	}
	body := map[string]any{"constraints": k}
	if len(w) > 0 {
		body["weights"] = w
	}
	path := "/api/v1/whatif"
	if cmd == c.place.FullCommand() {
		path = "/api/v1/placements"
		body["workload"], body["replicas"], body["cpu"], body["memory"], body["mode"] = c.workload, c.replicas, c.cpu, c.memory, c.mode
		if c.clusters != 0 {
			body["clusters"] = c.clusters
		}
	} else {
		body["fail"] = c.fail
	}
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.url, "/")+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	code, raw, err := roundTrip(req)
	if err != nil {
		return err
	}
	if c.jsonOut {
		_, err = out.Write(raw)
		if err == nil && code/100 != 2 {
			err = fmt.Errorf("POST %s: HTTP %d", path, code)
		}
		return err
	}
	var env struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("POST %s: HTTP %d: %s", path, code, bytes.TrimSpace(raw))
	}
	if path == "/api/v1/placements" {
		if len(env.Data) > 0 && env.Data[0] == '{' {
			var d placementOut
			if err := json.Unmarshal(env.Data, &d); err != nil {
				return err
			}
			printDecision(out, &d)
		}
	} else if env.Status == "success" {
		var r schedule.WhatIfResult
		if err := json.Unmarshal(env.Data, &r); err != nil {
			return err
		}
		printWhatIf(out, &r)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s (HTTP %d, %s)", env.Error, code, env.ErrorType)
	}
	return nil
}

// placementOut is a Decision as the API writes it (reasons and explanations as words).
type placementOut struct {
	Feasible bool   `json:"feasible"`
	Reason   string `json:"reason"`
	Ceiling  float64
	Clusters []struct {
		Cluster    string          `json:"cluster"`
		Filtered   []string        `json:"filtered"`
		Fits       int             `json:"fits"`
		Rank       int             `json:"rank"`
		Scores     schedule.Scores `json:"scores"`
		Replicas   int             `json:"replicas"`
		FreeCPU    float64         `json:"free_cpu_cores"`
		FreeMemory float64         `json:"free_memory_bytes"`
		Why        string          `json:"why"`
	} `json:"clusters"`
}

func printDecision(out io.Writer, d *placementOut) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tREPLICAS\tRANK\tSCORE\tFITS\tFREE CPU\tFREE MEMORY\tWHY")
	for _, c := range d.Clusters {
		rank, score := "-", "-"
		if c.Rank > 0 {
			rank, score = fmt.Sprint(c.Rank), fmt.Sprintf("%.1f", c.Scores.Total)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%.2f\t%s\t%s\n", c.Cluster, c.Replicas, rank, score, c.Fits, c.FreeCPU, gibs(c.FreeMemory), c.Why)
	}
	tw.Flush()
	if !d.Feasible {
		fmt.Fprintf(out, "no placement: %s\n", d.Reason)
	}
}

func printWhatIf(out io.Writer, r *schedule.WhatIfResult) {
	fmt.Fprintln(out, r.Summary)
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tSTATE\tCPU REQ BEFORE\tCPU REQ AFTER\tMEM REQ BEFORE\tMEM REQ AFTER\tFREE CPU AFTER\tRECEIVED PODS\tNOTE")
	for _, c := range r.Clusters {
		state, note := "up", ""
		switch {
		case c.Failed:
			state = "FAILED"
		case len(c.Filtered) > 0:
			state, note = "takes none", c.Filtered.String()
		}
		after := func(sat float64) string {
			if c.Failed {
				return "-"
			}
			return pctStr(sat)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%d\t%s\n", c.Cluster, state, pctStr(c.CPUSaturationBefore), after(c.CPUSaturationAfter),
			pctStr(c.MemorySaturationBefore), after(c.MemorySaturationAfter), c.FreeCPUAfter, c.ReceivedReplicas, note)
	}
	tw.Flush()
	fmt.Fprintln(out)
	ws := append([]schedule.WorkloadMove(nil), r.Workloads...)
	sort.SliceStable(ws, func(i, j int) bool { return ws[i].Unplaced > ws[j].Unplaced })
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tWORKLOAD\tPODS\tCPU/POD\tMEM/POD\tGOES TO\tUNPLACED")
	for _, w := range ws {
		var to []string
		for _, p := range w.Placements {
			to = append(to, fmt.Sprintf("%s:%d", p.Cluster, p.Replicas))
		}
		dest := strings.Join(to, " ")
		if dest == "" {
			dest = "-"
		}
		fmt.Fprintf(tw, "%s\t%s/%s\t%d\t%.2f\t%s\t%s\t%d\n", w.From, w.Namespace, w.Name, w.Replicas, w.CPUPerReplica, gibs(w.MemoryPerReplica), dest, w.Unplaced)
	}
	tw.Flush()
}

func pctStr(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }

func gibs(b float64) string { return fmt.Sprintf("%.2fGi", b/(1<<30)) }

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/alecthomas/kingpin/v2"

	"github.com/fleetwatch/fleetwatch/remediate"
)

// remediateCmd is `fleetwatch remediate ...`: a client of a running fleetwatch's remediation
// API.
type remediateCmd struct {
	plan, history, show, approve, deny, pause, resume *kingpin.CmdClause

	url, tokenFile string
	timeout        time.Duration
	jsonOut        bool

	incident, state, id, comment, cluster string
}

func newRemediateCmd(app *kingpin.Application) *remediateCmd {
	c := &remediateCmd{}
	cmd := app.Command("remediate", "Remediation: plans, approvals, pauses and history, asked of a running fleetwatch.")
	cmd.Flag("url", "fleetwatch's base URL.").Default("http://localhost:9095").StringVar(&c.url)
	cmd.Flag("bearer-token-file", "File with the bearer token of an identity (the operate role approves, denies and pauses).").StringVar(&c.tokenFile)
	cmd.Flag("timeout", "How long to wait for the answer.").Default("30s").DurationVar(&c.timeout)
	cmd.Flag("json", "Print the API's JSON answer instead of text.").BoolVar(&c.jsonOut)
	c.plan = cmd.Command("plan", "Print what fleetwatch would do about an active incident now: the playbook, every step with its mode and verification, every API call, and each guard's verdict. Nothing is kept or done.")
	c.plan.Flag("incident", "The incident's ID.").Required().StringVar(&c.incident)
	c.history = cmd.Command("history", "List remediations, oldest first.")
	c.history.Flag("state", "Only this state (active: every one not over).").StringVar(&c.state)
	c.history.Flag("incident", "Only the remediations of this incident.").StringVar(&c.incident)
	c.show = cmd.Command("show", "Print one remediation with its audit.")
	c.show.Arg("id", "The remediation's ID.").Required().StringVar(&c.id)
	c.approve = cmd.Command("approve", "Approve the step a remediation waits on (or verify again after an inconclusive verification).")
	c.approve.Arg("id", "The remediation's ID.").Required().StringVar(&c.id)
	c.approve.Flag("comment", "Why, for the audit.").StringVar(&c.comment)
	c.deny = cmd.Command("deny", "Deny the step a remediation waits on; the remediation ends.")
	c.deny.Arg("id", "The remediation's ID.").Required().StringVar(&c.id)
	c.deny.Flag("comment", "Why, for the audit.").StringVar(&c.comment)
	c.pause = cmd.Command("pause", "Start no new remediation action, on the fleet or on one cluster, until resume.")
	c.pause.Flag("cluster", "Pause this cluster only.").StringVar(&c.cluster)
	c.resume = cmd.Command("resume", "Lift a pause.")
	c.resume.Flag("cluster", "Resume this cluster only.").StringVar(&c.cluster)
	return c
}

func (c *remediateCmd) commands() []string {
	var out []string
	for _, cc := range []*kingpin.CmdClause{c.plan, c.history, c.show, c.approve, c.deny, c.pause, c.resume} {
		out = append(out, cc.FullCommand())
	}
	return out
}

func (c *remediateCmd) run(cmd string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.do(ctx, cmd, os.Stdout)
}

func (c *remediateCmd) do(ctx context.Context, cmd string, out io.Writer) error {
	method, path, body := http.MethodGet, "", []byte(nil)
	q := url.Values{}
	switch cmd {
	case c.plan.FullCommand():
		method, path = http.MethodPost, "/api/v1/remediations/plan"
		q.Set("incident", c.incident)
	case c.history.FullCommand():
		path = "/api/v1/remediations"
		if c.state != "" {
			q.Set("state", c.state)
		}
		if c.incident != "" {
			q.Set("incident", c.incident)
		}
	case c.show.FullCommand():
		path = "/api/v1/remediations/" + url.PathEscape(c.id)
	case c.approve.FullCommand(), c.deny.FullCommand():
		verb := "approve"
		if cmd == c.deny.FullCommand() {
			verb = "deny"
		}
		method, path = http.MethodPost, "/api/v1/remediations/"+url.PathEscape(c.id)+"/"+verb
		body, _ = json.Marshal(map[string]string{"comment": c.comment})
	case c.pause.FullCommand(), c.resume.FullCommand():
		method, path = http.MethodPost, "/api/v1/remediations/pause"
		if cmd == c.resume.FullCommand() {
			path = "/api/v1/remediations/resume"
		}
		if c.cluster != "" {
			q.Set("cluster", c.cluster)
		}
	default:
		return fmt.Errorf("unknown command %q", cmd)
	}
	u := strings.TrimSuffix(c.url, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.tokenFile != "" {
		tok, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return fmt.Errorf("--bearer-token-file: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	code, raw, err := roundTrip(req)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil || env.Status != "success" {
		msg := env.Error
		if msg == "" {
			msg = strings.TrimSpace(string(raw))
		}
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, code, msg)
	}
	if c.jsonOut {
		_, err = out.Write(append(env.Data, '\n'))
		return err
	}
	switch cmd {
	case c.history.FullCommand():
		var list []remediate.Remediation
		if err := json.Unmarshal(env.Data, &list); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tINCIDENT\tPLAYBOOK\tCLUSTERS\tSTATE\tCREATED\tREASON")
		for _, r := range list {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.IncidentID, r.Playbook, strings.Join(r.Clusters, ","), r.State,
				r.CreatedAt.UTC().Format(time.RFC3339), r.Reason)
		}
		return tw.Flush()
	case c.pause.FullCommand(), c.resume.FullCommand():
		var paused map[string]string
		if err := json.Unmarshal(env.Data, &paused); err != nil {
			return err
		}
		if len(paused) == 0 {
			fmt.Fprintln(out, "nothing is paused")
		}
		for scope, who := range paused {
			if scope == "" {
				scope = "the fleet"
			}
			fmt.Fprintf(out, "paused: %s (by %s)\n", scope, who)
		}
		return nil
	}
	var d remediate.Detail
	if err := json.Unmarshal(env.Data, &d); err != nil {
		return err
	}
	printRemediation(out, &d)
	return nil
}

// printRemediation writes a remediation as text: its steps, ops with their API calls, guards
// and audit.
func printRemediation(out io.Writer, d *remediate.Detail) {
	r := d.Remediation
	fmt.Fprintf(out, "remediation %s: playbook %s for incident %s (%s)\n", r.ID, r.Playbook, r.IncidentID, r.IncidentKey)
	fmt.Fprintf(out, "state: %s", r.State)
	if r.Reason != "" {
		fmt.Fprintf(out, " (%s)", r.Reason)
	}
	fmt.Fprintln(out)
	if r.DryRun {
		fmt.Fprintln(out, "dry run: every write goes out with dryRun=All")
	}
	for i, st := range r.Steps {
		fmt.Fprintf(out, "step %d: %s, mode %s, when %s, timeout %s, state %s\n", i+1, st.Action, st.Mode, st.When, st.Timeout, st.State)
		if st.Approval != nil && st.Approval.Decision != "" {
			fmt.Fprintf(out, "  %s by %s at %s\n", st.Approval.Decision, st.Approval.By, st.Approval.At.UTC().Format(time.RFC3339))
		}
		for _, op := range st.Ops {
			fmt.Fprintf(out, "  %s %s in %s: %s", op.Kind, strings.TrimPrefix(op.Namespace+"/"+op.Name, "/"), op.Cluster, op.State)
			if op.Detail != "" {
				fmt.Fprintf(out, " (%s)", op.Detail)
			}
			fmt.Fprintln(out)
			for _, call := range op.Calls {
				fmt.Fprintf(out, "    %s\n", call)
			}
			if op.Verify != "" {
				fmt.Fprintf(out, "    verify: %s\n", op.Verify)
			}
		}
	}
	for _, g := range r.Guards {
		verdict := "pass"
		if !g.Passed {
			verdict = "HOLD"
		}
		fmt.Fprintf(out, "guard %s: %s: %s\n", g.Guard, verdict, g.Detail)
	}
	for _, e := range d.Audit {
		fmt.Fprintf(out, "audit %d %s %s %s: %s\n", e.Seq, e.Time.UTC().Format(time.RFC3339), e.Actor, e.Event, e.Detail)
	}
}

// roundTrip sends a request of a CLI command to fleetwatch's API and reads the whole answer.
func roundTrip(req *http.Request) (int, []byte, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

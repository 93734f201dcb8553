package controlplanes

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fleetwatch/fleetwatch/collector"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/lab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
	"github.com/fleetwatch/fleetwatch/remediate"
)

// correlateConfig shortens correlation so that an incident opens and resolves within seconds.
const correlateConfig = "  evaluation_interval: 1s\n  resolve_after: 5s\n"

// remediationRules are cpRules with a silent_after that outlasts a restart of fleetwatch: the
// last-ingest times it writes into the view lag by up to two of their 15s intervals across a
// kill -9, and the clusters must not look silent (and suppress remediation) for that.
var remediationRules = strings.Replace(cpRules, "silent_after: 20s", "silent_after: 45s", 1)

type client struct {
	t     *testing.T
	base  string
	token string
}

// on is the client for another (sub)test.
func (c client) on(t *testing.T) client { c.t = t; return c }

// call sends a request to fleetwatch's API and decodes data into out; it returns the status.
func (c client) call(method, path string, body any, out any) int {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(c.t, err)
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	require.NoError(c.t, err)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	raw, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	require.NoError(c.t, json.Unmarshal(raw, &env), "%s %s: %s", method, path, raw)
	if out != nil && env.Status == "success" {
		require.NoError(c.t, json.Unmarshal(env.Data, out))
	}
	return resp.StatusCode
}

// TestRemediation runs fleetwatch's remediation on the lab's real control planes: incidents
// from the view drive actions through each cluster's API server, and each action is verified
// in the same view.
func TestRemediation(t *testing.T) {
	dir := t.TempDir()
	oncall := testenv.WriteFile(t, dir, "oncall.token", "oncall-secret\n")
	viewer := testenv.WriteFile(t, dir, "viewer.token", "viewer-secret\n")
	l := lab.Start(t, lab.Options{
		Clusters: 3, ControlPlanes: true, Rules: remediationRules, Correlate: correlateConfig,
		FleetwatchConfig: cpQuery + "api_probe: {interval: 2s, timeout: 1s}\n" +
			"remediation:\n  enabled: true\n  evaluation_interval: 1s\n" +
			"access:\n  anonymous_roles: [read]\n  identities:\n" +
			fmt.Sprintf("    - {name: oncall, roles: [operate], bearer_token_file: %s}\n", oncall) +
			fmt.Sprintf("    - {name: viewer, roles: [read], bearer_token_file: %s}\n", viewer),
	})
	anon := client{t: t, base: l.FleetwatchURL}
	reader := client{t: t, base: l.FleetwatchURL, token: "viewer-secret"}
	truth := l.Truth()
	testenv.Eventually(t, time.Minute, func() error {
		pods := lab.VectorByCluster(queryVector(t, l, `count by (cluster) (kube_pod_status_phase{phase="Running"} == 1)`))
		for _, c := range l.Clusters {
			if pods[c] != float64(truth[c].Pods) || truth[c].Pods == 0 {
				return fmt.Errorf("cluster %s: %v running pods in the view, %d in its API", c, pods[c], truth[c].Pods)
			}
		}
		return nil
	})

	t.Run("NotReady nodes: approved, cordoned, drained, recovered in the view", func(t *testing.T) {
		anon, reader := anon.on(t), reader.on(t)
		c := l.Clusters[0]
		l.UploadScenario(fmt.Sprintf("name: nodes-down\nsteps:\n  - {after: 0s, action: nodes_not_ready, cluster: %s, count: 2}\n", c))
		l.StartScenario("nodes-down")

		// One incident, and a remediation waiting for an operator.
		var rem remediate.Remediation
		testenv.Eventually(t, 2*time.Minute, func() error {
			var list []remediate.Remediation
			require.Equal(t, http.StatusOK, anon.call("GET", "/api/v1/remediations?state=active", nil, &list))
			if len(list) != 1 || list[0].State != remediate.StateWaiting {
				return fmt.Errorf("want one remediation waiting for approval, got %+v", list)
			}
			rem = list[0]
			return nil
		})
		require.Equal(t, remediate.PlaybookNodesNotReady, rem.Playbook)
		require.Equal(t, []string{c}, rem.Clusters)
		incidents := l.Incidents("state=active")
		require.Len(t, incidents, 1, "one incident per real problem: %+v", incidents)
		require.Equal(t, incidents[0].ID, rem.IncidentID)
		nodes := []string{rem.Steps[0].Ops[0].Name, rem.Steps[0].Ops[1].Name}
		require.Len(t, rem.Steps[0].Ops, 2)

		// Nothing acts without an identity with the operate role: none is 401, a reader 403.
		require.Equal(t, http.StatusUnauthorized, anon.call("POST", "/api/v1/remediations/"+rem.ID+"/approve", nil, nil))
		require.Equal(t, http.StatusForbidden, reader.call("POST", "/api/v1/remediations/"+rem.ID+"/approve", nil, nil))
		cs := l.ControlPlanes[c].Client
		for _, n := range nodes {
			node, err := cs.CoreV1().Nodes().Get(context.Background(), n, metav1.GetOptions{})
			require.NoError(t, err)
			require.False(t, node.Spec.Unschedulable, "nothing is cordoned before the approval")
		}
		// The plan says what will be done, with every API call; then the operator approves with
		// the CLI.
		fw := testenv.Fleetwatch(t)
		plan, err := exec.Command(fw, "remediate", "--url="+l.FleetwatchURL, "plan", "--incident="+rem.IncidentID).CombinedOutput()
		require.NoError(t, err, "%s", plan)
		for _, n := range nodes {
			require.Contains(t, string(plan), "PATCH /api/v1/nodes/"+n+" spec.unschedulable=true")
		}
		verify, err := config.RenderVerify(remediate.DefaultPlaybooks[0].Steps[0].Verify, config.VerifyTarget{Cluster: c, Node: nodes[0]})
		require.NoError(t, err)
		require.Contains(t, string(plan), "verify: "+verify)
		approved := time.Now()
		out, err := exec.Command(fw, "remediate", "--url="+l.FleetwatchURL, "--bearer-token-file="+oncall, "approve", rem.ID, "--comment=e2e").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Contains(t, string(out), "approved by oncall")

		testenv.Eventually(t, 3*time.Minute, func() error {
			var d remediate.Detail
			require.Equal(t, http.StatusOK, anon.call("GET", "/api/v1/remediations/"+rem.ID, nil, &d))
			if d.State != remediate.StateSucceeded {
				return fmt.Errorf("remediation %s: %s", d.ID, describe(t, l, anon, d.ID))
			}
			rem = *d.Remediation
			require.True(t, slices.ContainsFunc(d.Audit, func(e remediate.AuditEntry) bool {
				return e.Event == remediate.EventApproval && e.Actor == "oncall" && strings.Contains(e.Detail, "approved by oncall: e2e")
			}), "the audit records who approved")
			return nil
		})
		t.Logf("approval to verified recovery: %s", time.Since(approved).Round(time.Second))
		out, err = exec.Command(fw, "remediate", "--url="+l.FleetwatchURL, "history").CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Regexp(t, rem.ID+`\s+`+rem.IncidentID+`\s+`+remediate.PlaybookNodesNotReady+`\s+`+c+`\s+succeeded`, string(out))

		// In the cluster's API: the nodes are cordoned by fleetwatch's ops and hold no pod.
		for _, n := range nodes {
			node, err := cs.CoreV1().Nodes().Get(context.Background(), n, metav1.GetOptions{})
			require.NoError(t, err)
			require.True(t, node.Spec.Unschedulable, n)
			require.True(t, strings.HasPrefix(node.Annotations[remediate.ActionAnnotation], rem.ID), node.Annotations)
			pods, err := cs.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + n})
			require.NoError(t, err)
			require.Empty(t, pods.Items, "pods left on %s", n)
		}
		// In the view: every pod runs again, elsewhere.
		testenv.Eventually(t, 2*time.Minute, func() error {
			running := lab.VectorByCluster(queryVector(t, l, fmt.Sprintf(`count by (cluster) (kube_pod_status_phase{cluster=%q, phase="Running"} == 1)`, c)))
			onDown := queryVector(t, l, fmt.Sprintf(`count(kube_pod_info{cluster=%q, node=~%q})`, c, strings.Join(nodes, "|")))
			if running[c] != float64(truth[c].Pods) || len(onDown) != 0 {
				return fmt.Errorf("running %v of %d, on the drained nodes %v", running[c], truth[c].Pods, onDown)
			}
			return nil
		})
		// The NotReady nodes are out of service (cordoned): the incident resolves.
		testenv.Eventually(t, 2*time.Minute, func() error {
			if act := l.Incidents("state=active"); len(act) != 0 {
				return fmt.Errorf("active incidents: %+v", act)
			}
			return nil
		})
		l.StopScenario("nodes-down")
	})

	t.Run("kill -9 during a drain: it resumes, nothing runs twice, nothing is lost", func(t *testing.T) {
		killDuringDrain(t, l, anon.on(t), client{t: t, base: l.FleetwatchURL, token: "oncall-secret"})
	})

	t.Run("fleetwatch cut off from 2 of 3 clusters: zero actions, a freeze incident", func(t *testing.T) {
		partitioned(t, l, anon.on(t), client{t: t, base: l.FleetwatchURL, token: "oncall-secret"})
	})

	t.Run("bad rollout in 3 clusters: rolled back canary first, crash loops stop", func(t *testing.T) {
		anon := anon.on(t)
		ns, deploy := "payments", "api"
		for _, c := range l.Clusters {
			l.Kubectl(c, "-n", ns, "set", "image", "deployment/"+deploy, deploy+"=registry.example/payments/api:v9.9.9-crashloop")
		}
		// One incident; its remediations (one, or more when the rollout reached a cluster
		// later) roll the Deployment back in every cluster, each verified.
		var rems []remediate.Remediation
		testenv.Eventually(t, 4*time.Minute, func() error {
			var list []remediate.Remediation
			require.Equal(t, http.StatusOK, anon.call("GET", "/api/v1/remediations", nil, &list))
			rems = slices.DeleteFunc(list, func(r remediate.Remediation) bool { return r.Playbook != remediate.PlaybookBadRollout })
			var rolledBack []string
			for _, r := range rems {
				if r.State != remediate.StateSucceeded {
					return fmt.Errorf("bad-rollout remediation %s: %s", r.ID, describe(t, l, anon, r.ID))
				}
				for _, op := range r.Steps[0].Ops {
					rolledBack = append(rolledBack, op.Cluster)
				}
			}
			slices.Sort(rolledBack)
			if !slices.Equal(rolledBack, l.Clusters) {
				return fmt.Errorf("rolled back in %v of %v", rolledBack, l.Clusters)
			}
			return nil
		})
		for _, rem := range rems {
			require.Equal(t, rems[0].IncidentID, rem.IncidentID, "one incident")
			require.Equal(t, "rollout/"+ns+"/"+deploy, rem.IncidentKey)
			ops := rem.Steps[0].Ops
			// Cluster by cluster: each rollback acted only after the one before it verified.
			for i := 1; i < len(ops); i++ {
				require.False(t, ops[i].ActedAt.Before(ops[i-1].VerifiedAt), "op %d acted at %s, before op %d verified at %s", i, ops[i].ActedAt, i-1, ops[i-1].VerifiedAt)
			}
			t.Logf("remediation %s rolled back %d clusters, %s after the incident opened", rem.ID, len(ops), rem.DoneAt.Sub(rem.OpenedAt).Round(time.Second))
		}
		crashing := fmt.Sprintf(`sum by (cluster) (kube_pod_container_status_waiting_reason{namespace=%q, reason="CrashLoopBackOff"})`, ns)
		testenv.Eventually(t, 2*time.Minute, func() error {
			for c, v := range lab.VectorByCluster(queryVector(t, l, crashing)) {
				if v != 0 {
					return fmt.Errorf("%s still crash-loops: %v", c, v)
				}
			}
			return nil
		})
		for _, c := range l.Clusters {
			d, err := l.ControlPlanes[c].Client.AppsV1().Deployments(ns).Get(context.Background(), deploy, metav1.GetOptions{})
			require.NoError(t, err)
			require.NotContains(t, d.Spec.Template.Spec.Containers[0].Image, "crashloop", c)
			require.True(t, slices.ContainsFunc(rems, func(r remediate.Remediation) bool {
				return strings.HasPrefix(d.Annotations[remediate.ActionAnnotation], r.ID)
			}), "%s: %v", c, d.Annotations)
		}
	})
}

// nodesDown makes count nodes of cluster NotReady (until the test ends) and returns the
// remediation that then waits for an operator's approval.
func nodesDown(t *testing.T, l *lab.Lab, anon client, c string, count int) remediate.Remediation {
	t.Helper()
	name := "nodes-down-" + c
	l.UploadScenario(fmt.Sprintf("name: %s\nsteps:\n  - {after: 0s, action: nodes_not_ready, cluster: %s, count: %d}\n", name, c, count))
	l.StartScenario(name)
	t.Cleanup(func() { l.StopScenario(name) })
	var rem remediate.Remediation
	testenv.Eventually(t, 2*time.Minute, func() error {
		var list []remediate.Remediation
		require.Equal(t, http.StatusOK, anon.call("GET", "/api/v1/remediations?state="+remediate.StateWaiting, nil, &list))
		for _, r := range list {
			if slices.Equal(r.Clusters, []string{c}) {
				rem = r
				return nil
			}
		}
		return fmt.Errorf("no remediation waits for approval in %s: %+v", c, list)
	})
	return rem
}

// killDuringDrain: fleetwatch is killed (SIGKILL) in the middle of a drain; after the restart
// the drain resumes, nothing the API server was asked to do twice succeeded twice, and every
// write in the API server's audit log has its entry in fleetwatch's audit, made before it.
func killDuringDrain(t *testing.T, l *lab.Lab, anon, op client) {
	c := l.Clusters[1]
	rem := nodesDown(t, l, anon, c, 2)
	require.Equal(t, http.StatusOK, op.call("POST", "/api/v1/remediations/"+rem.ID+"/approve", nil, nil))

	// Killed as soon as the drain's first eviction is in fleetwatch's audit.
	testenv.Eventually(t, 2*time.Minute, func() error {
		var d remediate.Detail
		require.Equal(t, http.StatusOK, anon.call("GET", "/api/v1/remediations/"+rem.ID, nil, &d))
		if !slices.ContainsFunc(d.Audit, func(e remediate.AuditEntry) bool {
			return e.Event == remediate.EventCall && strings.Contains(e.Detail, "/eviction")
		}) {
			return fmt.Errorf("no eviction yet: %s", d.State)
		}
		return nil
	})
	l.RestartFleetwatch()
	var d remediate.Detail
	testenv.Eventually(t, 3*time.Minute, func() error {
		require.Equal(t, http.StatusOK, anon.call("GET", "/api/v1/remediations/"+rem.ID, nil, &d))
		if d.State != remediate.StateSucceeded {
			return fmt.Errorf("remediation %s: %s", d.ID, describe(t, l, anon, d.ID))
		}
		return nil
	})

	// The API server's audit log: every write fleetwatch's remediation made.
	writes := l.Audit(c, remediate.UserAgent)
	require.NotEmpty(t, writes)
	succeeded := map[string]int{}
	for _, w := range writes {
		target := w.ObjectRef.Resource + "/" + w.ObjectRef.Subresource + " " + w.ObjectRef.Namespace + "/" + w.ObjectRef.Name
		if w.ResponseStatus.Code/100 == 2 {
			succeeded[target]++
		}
		// Each write was in fleetwatch's audit first.
		require.True(t, slices.ContainsFunc(d.Audit, func(e remediate.AuditEntry) bool {
			return e.Event == remediate.EventCall && strings.Contains(e.Detail, "/"+w.ObjectRef.Name)
		}), "%s %s is in the API server's audit log, not in fleetwatch's", w.Verb, w.RequestURI)
	}
	for target, n := range succeeded {
		require.Equal(t, 1, n, "%s succeeded %d times", target, n)
	}
	t.Logf("%d writes to %s's API server, %d of them succeeded, across a kill -9", len(writes), c, len(succeeded))
}

// partitioned: fleetwatch's own path to the API servers of 2 of the 3 clusters is cut (their
// data still arrives). A remediation waiting in the third cluster is approved, and nothing
// acts: fleetwatch is likelier the one cut off, so it freezes and says so in an incident. Once
// the paths heal, it goes on.
func partitioned(t *testing.T, l *lab.Lab, anon, op client) {
	c, cut := l.Clusters[2], l.Clusters[:2]
	rem := nodesDown(t, l, anon, c, 2)
	for _, p := range cut {
		l.Fault(p, "fleetwatch-path/cut", nil)
	}
	testenv.Eventually(t, time.Minute, func() error {
		up := lab.VectorByCluster(queryVector(t, l, collector.APIUpMetric))
		for _, p := range cut {
			if v, ok := up[p]; !ok || v != 0 {
				return fmt.Errorf("%s: %v", collector.APIUpMetric, up)
			}
		}
		return nil
	})
	require.Equal(t, http.StatusOK, op.call("POST", "/api/v1/remediations/"+rem.ID+"/approve", nil, nil))
	testenv.Eventually(t, time.Minute, func() error {
		var d remediate.Detail
		require.Equal(t, http.StatusOK, anon.call("GET", "/api/v1/remediations/"+rem.ID, nil, &d))
		if d.State != remediate.StateHeld || !strings.Contains(d.Reason, "frozen: 2 of 3 clusters look unreachable") {
			return fmt.Errorf("remediation %s: %s (%s)", d.ID, d.State, d.Reason)
		}
		for _, i := range l.Incidents("state=active") {
			if i.RootCause == remediate.AlertFrozen {
				return nil
			}
		}
		return fmt.Errorf("no %s incident", remediate.AlertFrozen)
	})
	require.Empty(t, l.Audit(c, remediate.UserAgent), "zero actions while frozen")

	for _, p := range cut {
		l.Fault(p, "fleetwatch-path/heal", nil)
	}
	testenv.Eventually(t, 3*time.Minute, func() error {
		var d remediate.Detail
		require.Equal(t, http.StatusOK, anon.call("GET", "/api/v1/remediations/"+rem.ID, nil, &d))
		if d.State != remediate.StateSucceeded {
			return fmt.Errorf("remediation %s: %s", d.ID, describe(t, l, anon, d.ID))
		}
		for _, i := range l.Incidents("state=active") {
			if i.RootCause == remediate.AlertFrozen {
				return fmt.Errorf("%s incident still open", remediate.AlertFrozen)
			}
		}
		return nil
	})
	require.NotEmpty(t, l.Audit(c, remediate.UserAgent))
}

// describe says where a remediation is: its state, and each op's state, detail and the value
// of its verification now.
func describe(t *testing.T, l *lab.Lab, c client, id string) string {
	var d remediate.Detail
	if id == "" {
		return "none yet"
	}
	if c.call("GET", "/api/v1/remediations/"+id, nil, &d) != http.StatusOK {
		return "not found"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s)", d.State, d.Reason)
	for _, st := range d.Steps {
		for _, op := range st.Ops {
			fmt.Fprintf(&b, "; %s %s/%s in %s: %s (%s)", op.Action, op.Namespace, op.Name, op.Cluster, op.State, op.Detail)
			if op.Verify != "" {
				fmt.Fprintf(&b, " verify now: %v", queryVector(t, l, op.Verify))
			}
		}
	}
	return b.String()
}

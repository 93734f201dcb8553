package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fleetwatch/fleetwatch/internal/kubelab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// ControlPlane is one lab cluster's real control plane (Options.ControlPlanes).
type ControlPlane struct {
	kubelab.Endpoint
	// Client is an admin client of the API server (directly, not through fleetwatch's path).
	Client kubernetes.Interface
}

func (l *Lab) readControlPlanes() {
	var eps []kubelab.Endpoint
	l.getJSON("/control-planes", &eps)
	l.ControlPlanes = map[string]*ControlPlane{}
	for _, e := range eps {
		cfg, err := clientcmd.BuildConfigFromFlags("", e.Kubeconfig)
		if err != nil {
			l.t.Fatalf("kubeconfig of %s: %v", e.Name, err)
		}
		cfg.QPS, cfg.Burst = 50, 100
		c, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			l.t.Fatal(err)
		}
		l.ControlPlanes[e.Name] = &ControlPlane{Endpoint: e, Client: c}
	}
	if len(l.ControlPlanes) != len(l.Clusters) {
		l.t.Fatalf("%d control planes for %d clusters", len(l.ControlPlanes), len(l.Clusters))
	}
}

// Kubectl runs the real kubectl against a cluster's API server and returns its output.
func (l *Lab) Kubectl(cluster string, args ...string) string {
	l.t.Helper()
	cp := l.ControlPlanes[cluster]
	if cp == nil {
		l.t.Fatalf("cluster %s has no control plane", cluster)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, testenv.Peer(l.t, kubelab.BinKubectl), append([]string{"--kubeconfig", cp.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		l.t.Fatalf("kubectl %s (cluster %s): %v\n%s", strings.Join(args, " "), cluster, err, out)
	}
	return string(out)
}

// Fault posts a fault to the simulator's control planes: part/op is apiserver/stop,
// apiserver/start, fleetwatch-path/cut, fleetwatch-path/heal or fleetwatch-path/latency
// (query: duration=2s).
func (l *Lab) Fault(cluster, partOp string, query url.Values) {
	l.t.Helper()
	path := "/control-planes/" + url.PathEscape(cluster) + "/" + partOp
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	l.post(path, nil)
}

// StopPrometheus stops a cluster's Prometheus (SIGKILL): the cluster goes silent.
func (l *Lab) StopPrometheus(cluster string) {
	l.Members[cluster].Process.Kill()
}

// StartPrometheus starts a stopped cluster's Prometheus again, on the same address,
// configuration and data.
func (l *Lab) StartPrometheus(cluster string) {
	l.t.Helper()
	m := l.Members[cluster]
	m.Process = testenv.Start(l.t, "prometheus-"+cluster, m.args[0], m.args[1:]...)
	m.Process.WaitReady(l.t, m.URL+"/-/ready", 60*time.Second)
}

// String describes the control plane for a test log.
func (cp *ControlPlane) String() string {
	return fmt.Sprintf("%s: API server %s, fleetwatch's path %s, kube-state-metrics %s", cp.Name, cp.APIServer, cp.FleetwatchAPIServer, cp.KubeStateMetrics)
}

// AuditEvent is the part of an API server audit event the tests read.
type AuditEvent struct {
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	UserAgent  string `json:"userAgent"`
	ObjectRef  struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	// RequestObject is the body, for evictions (their deleteOptions.dryRun).
	RequestObject json.RawMessage `json:"requestObject,omitempty"`
}

// DryRun reports whether the API server was asked not to persist the write: dryRun=All in the
// request URI, or in an eviction's deleteOptions.
func (e AuditEvent) DryRun() bool {
	if u, err := url.Parse(e.RequestURI); err == nil && u.Query().Get("dryRun") == "All" {
		return true
	}
	var body struct {
		DeleteOptions struct {
			DryRun []string `json:"dryRun"`
		} `json:"deleteOptions"`
	}
	return json.Unmarshal(e.RequestObject, &body) == nil && slices.Contains(body.DeleteOptions.DryRun, "All")
}

// Audit returns the writes a cluster's API server logged whose user agent starts with agent
// ("" for all), in order.
func (l *Lab) Audit(cluster, agent string) []AuditEvent {
	l.t.Helper()
	data, err := os.ReadFile(l.ControlPlanes[cluster].AuditLog)
	if err != nil {
		l.t.Fatalf("audit log of %s: %v", cluster, err)
	}
	var out []AuditEvent
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var e AuditEvent
		if err := json.Unmarshal(line, &e); err != nil {
			l.t.Fatalf("audit log of %s: %v: %s", cluster, err, line)
		}
		if strings.HasPrefix(e.UserAgent, agent) {
			out = append(out, e)
		}
	}
	return out
}

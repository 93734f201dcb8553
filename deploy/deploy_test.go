package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fleetwatch/fleetwatch/deploy"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/internal/kubelab"
	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

func TestMain(m *testing.M) { testenv.VerifyNoLeaks(stopLabAfter{m}, testenv.IdleConnections...) }

// stopLabAfter runs the tests, then stops the control plane they share, before the leak check.
type stopLabAfter struct{ *testing.M }

func (s stopLabAfter) Run() int {
	code := s.M.Run()
	if theLab != nil {
		theLab.cp.Close()
		_ = os.RemoveAll(theLab.cp.Dir)
	}
	return code
}

// prometheusOperator is the module whose CRDs the manifests are validated against: the
// ServiceMonitor and PrometheusRule of the install, the Prometheus of the member snippet.
const prometheusOperator = "github.com/prometheus-operator/prometheus-operator@v0.89.0"

var crdFiles = []string{
	"example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
	"example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
	"example/prometheus-operator-crd/monitoring.coreos.com_prometheuses.yaml",
}

// lab is one control plane (with the token controller, for Join) shared by the tests.
type lab struct {
	cp      *kubelab.ControlPlane
	kubectl string
	kube    kubernetes.Interface
}

var (
	labOnce sync.Once
	theLab  *lab
	labErr  error
)

func startLab(t *testing.T) *lab {
	t.Helper()
	testenv.SkipIfShort(t)
	kubectl := testenv.Peer(t, kubelab.BinKubectl)
	for _, b := range []string{kubelab.BinEtcd, kubelab.BinKubeAPIServer, kubelab.BinKubeControllerManager, kubelab.BinKubeScheduler} {
		testenv.Peer(t, b)
	}
	labOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fleetwatch-deploy-")
		if err != nil {
			labErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cp, err := kubelab.StartControlPlane(ctx, kubelab.ControlPlaneOptions{Name: "mgmt", Dir: dir, BinDir: testenv.PeersBin()})
		if err != nil {
			labErr = err
			return
		}
		kube, err := kubernetes.NewForConfig(cp.RESTConfig(cp.URL))
		if err != nil {
			labErr = err
			return
		}
		theLab = &lab{cp: cp, kubectl: kubectl, kube: kube}
		labErr = theLab.installCRDs()
	})
	require.NoError(t, labErr)
	return theLab
}

func (l *lab) run(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command(l.kubectl, append([]string{"--kubeconfig=" + l.cp.Kubeconfig}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out, nil
}

// installCRDs installs the Prometheus Operator's CRDs from its module (downloaded from the
// module proxy into the module cache, like every other dependency) and waits until they serve.
func (l *lab) installCRDs() error {
	cmd := exec.Command("go", "mod", "download", "-json", prometheusOperator)
	cmd.Dir = os.TempDir() // outside fleetwatch's module: it is not one of its dependencies
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("go mod download %s: %w", prometheusOperator, err)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		return fmt.Errorf("go mod download %s: %v %s", prometheusOperator, err, mod.Error)
	}
	for _, f := range crdFiles {
		b, err := os.ReadFile(filepath.Join(mod.Dir, f))
		if err != nil {
			return err
		}
		if _, err := l.run(b, "apply", "--server-side", "-f", "-"); err != nil {
			return err
		}
	}
	// kubectl wait fails at once on a CRD whose status has no conditions yet: ask again.
	var waitErr error
	err = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		_, waitErr = l.run(nil, "wait", "--for=condition=Established", "--timeout=30s",
			"crd/servicemonitors.monitoring.coreos.com", "crd/prometheusrules.monitoring.coreos.com", "crd/prometheuses.monitoring.coreos.com")
		return waitErr == nil, nil
	})
	return errors.Join(err, waitErr)
}

// render is `kubectl kustomize` of a directory under kubernetes/.
func (l *lab) render(t *testing.T, dir string) []byte {
	t.Helper()
	out, err := l.run(nil, "kustomize", filepath.Join("kubernetes", dir))
	require.NoError(t, err)
	return out
}

// dryRun applies the manifests with server-side apply and server-side dry run: the API server
// validates every object strictly (unknown or duplicate fields fail), runs admission, and
// keeps nothing.
func (l *lab) dryRun(t *testing.T, manifests []byte) string {
	t.Helper()
	out, err := l.run(manifests, "apply", "--server-side", "--dry-run=server", "--validate=strict", "--field-manager=fleetwatch-test", "-f", "-")
	require.NoError(t, err)
	return string(out)
}

// ensureNamespace creates a namespace for real: a dry run of the objects in it needs it.
func (l *lab) ensureNamespace(t *testing.T, name string) {
	t.Helper()
	_, err := l.run([]byte(fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", name)), "apply", "--server-side", "-f", "-")
	require.NoError(t, err)
}

func decode(t *testing.T, manifests []byte) []*unstructured.Unstructured {
	t.Helper()
	objs, err := deploy.Decode(manifests)
	require.NoError(t, err)
	return objs
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && (name == "" || o.GetName() == name) {
			return o
		}
	}
	return nil
}

func convert[T any](t *testing.T, o *unstructured.Unstructured) *T {
	t.Helper()
	require.NotNil(t, o)
	var v T
	require.NoError(t, runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &v))
	return &v
}

// TestOverlays: each install renders with kustomize, every object passes the real API server's
// validation and admission (server-side dry-run apply), and the rendered install is what it
// says: fleetwatch's configuration loads, the pod runs as non-root on a read-only root
// filesystem with its probes, the ha install has two replicas and the Lease's Role, the thanos
// install forwards to Thanos Receive and reads through Thanos Query.
func TestOverlays(t *testing.T) {
	l := startLab(t)
	l.ensureNamespace(t, "fleetwatch")
	for _, tc := range []struct {
		overlay  string
		replicas int32
		lease    bool
		thanos   bool
	}{
		{"single", 1, false, false},
		{"ha", 2, true, false},
		{"thanos", 2, true, true},
	} {
		t.Run(tc.overlay, func(t *testing.T) {
			manifests := l.render(t, filepath.Join("overlays", tc.overlay))
			out := l.dryRun(t, manifests)
			objs := decode(t, manifests)
			for _, o := range objs {
				kind := strings.ToLower(o.GetKind())
				if g := o.GroupVersionKind().Group; g != "" {
					kind += "." + g
				}
				require.Contains(t, out, kind+"/"+o.GetName()+" serverside-applied (server dry run)", "every object is validated")
				if o.GetKind() != "Namespace" {
					require.Equal(t, "fleetwatch", o.GetNamespace(), "%s %s", o.GetKind(), o.GetName())
				}
			}
			for _, kind := range []string{"ServiceAccount", "Service", "StatefulSet", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule", "ConfigMap"} {
				require.NotNil(t, find(objs, kind, ""), "the %s install has a %s", tc.overlay, kind)
			}

			cm := convert[corev1.ConfigMap](t, find(objs, "ConfigMap", ""))
			dir := t.TempDir()
			cfg, err := config.Load([]byte(cm.Data["fleetwatch.yml"]), dir)
			require.NoError(t, err, "the install's fleetwatch.yml")

			require.Equal(t, tc.thanos, cfg.Ingest.Forward != nil, "samples forwarded to Thanos Receive")
			require.Equal(t, tc.thanos, len(cfg.Query.Stores) == 1, "the view reads Thanos Query")

			sts := convert[appsv1.StatefulSet](t, find(objs, "StatefulSet", "fleetwatch"))
			require.Equal(t, tc.replicas, *sts.Spec.Replicas)
			pod := sts.Spec.Template.Spec
			require.True(t, *pod.SecurityContext.RunAsNonRoot)
			c := pod.Containers[0]
			require.True(t, *c.SecurityContext.ReadOnlyRootFilesystem)
			require.False(t, *c.SecurityContext.AllowPrivilegeEscalation)
			require.Equal(t, []corev1.Capability{"ALL"}, c.SecurityContext.Capabilities.Drop)
			require.Equal(t, "/-/healthy", c.LivenessProbe.HTTPGet.Path)
			require.Equal(t, "/-/ready", c.ReadinessProbe.HTTPGet.Path)
			require.False(t, c.Resources.Requests.Cpu().IsZero())
			require.False(t, c.Resources.Requests.Memory().IsZero())
			require.Contains(t, c.Args, "--config.file=/etc/fleetwatch/fleetwatch.yml")
			version, err := os.ReadFile(filepath.Join("..", "VERSION"))
			require.NoError(t, err)
			require.Equal(t, "fleetwatch/fleetwatch:"+strings.TrimSpace(string(version)), c.Image, "the image `make image` builds (VERSION)")
			require.Equal(t, cm.Name, pod.Volumes[0].ConfigMap.Name, "the pod mounts the generated ConfigMap")

			role := find(objs, "Role", "")
			require.Equal(t, tc.lease, role != nil, "a Role for the Lease")
			require.Equal(t, tc.lease, pod.AutomountServiceAccountToken != nil && *pod.AutomountServiceAccountToken, "a token only where the API is used")
			if tc.lease {
				le := cfg.Remediation.LeaderElection
				require.NotNil(t, le)
				require.Empty(t, le.Cluster, "the Lease is in the cluster fleetwatch runs in")
				require.Equal(t, "fleetwatch", le.Namespace, "the Lease is where the Role is")
				r := convert[rbacv1.Role](t, role)
				var names []string
				for _, rule := range r.Rules {
					names = append(names, rule.ResourceNames...)
				}
				require.Contains(t, names, le.LeaseName)
			}
		})
	}
}

// TestMemberManifests: the member side renders and validates too, and the Prometheus Operator
// snippet is a valid Prometheus resource; the plain Prometheus snippet passes promtool.
func TestMemberManifests(t *testing.T) {
	l := startLab(t)
	l.ensureNamespace(t, deploy.MemberNamespace)
	out := l.dryRun(t, l.render(t, "member"))
	require.Contains(t, out, "clusterrole.rbac.authorization.k8s.io/"+deploy.MemberClusterRole+" serverside-applied (server dry run)")

	for _, f := range []string{"hub-lease.yaml", "prometheus-operator.yaml"} {
		b, err := os.ReadFile(filepath.Join("kubernetes", "member", f))
		require.NoError(t, err)
		for _, o := range decode(t, b) {
			l.ensureNamespace(t, o.GetNamespace())
		}
		l.dryRun(t, b)
	}

	promtool := testenv.Peer(t, "promtool")
	dir := t.TempDir()
	snippet, err := os.ReadFile(filepath.Join("kubernetes", "member", "prometheus.yml"))
	require.NoError(t, err)
	token := testenv.WriteFile(t, dir, "token", "x\n")
	snippet = bytes.ReplaceAll(snippet, []byte("/etc/prometheus/secrets/fleetwatch/token"), []byte(token))
	p := testenv.WriteFile(t, dir, "prometheus.yml", string(snippet))
	outb, err := exec.Command(promtool, "check", "config", p).CombinedOutput()
	require.NoError(t, err, "promtool check config:\n%s", outb)
}

// TestJoin: Join applies the member manifests and returns a kubeconfig that acts as the member
// ServiceAccount, which may make exactly the calls remediation's playbooks make: what they need
// is allowed, anything else is refused. A second Join changes nothing but the credentials.
func TestJoin(t *testing.T) {
	l := startLab(t)
	ctx := context.Background()
	creds, err := deploy.Join(ctx, l.cp.RESTConfig(l.cp.URL), deploy.JoinOptions{Cluster: "eu-1"})
	require.NoError(t, err)
	require.Len(t, creds.RemoteWriteToken, 64)

	rc, err := clientcmd.RESTConfigFromKubeConfig(creds.Kubeconfig)
	require.NoError(t, err)
	require.Equal(t, l.cp.URL, rc.Host)
	member, err := kubernetes.NewForConfig(rc)
	require.NoError(t, err)
	review, err := member.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Equal(t, "system:serviceaccount:"+deploy.MemberNamespace+":"+deploy.MemberServiceAccount, review.Status.UserInfo.Username)

	allowed := func(verb, group, resource, sub string) bool {
		r, err := member.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Verb: verb, Group: group, Resource: resource, Subresource: sub, Namespace: "shop",
			}},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		return r.Status.Allowed
	}
	for _, c := range []struct {
		verb, group, resource, sub string
		want                       bool
	}{
		// what the playbooks do (remediate/kube.go, remediate/failover.go)
		{"patch", "", "nodes", "", true},
		{"list", "", "pods", "", true},
		{"create", "", "pods", "eviction", true},
		{"create", "", "namespaces", "", true},
		{"list", "apps", "replicasets", "", true},
		{"update", "apps", "deployments", "", true},
		{"delete", "apps", "deployments", "", true},
		// and nothing else
		{"delete", "", "nodes", "", false},
		{"delete", "", "pods", "", false},
		{"get", "", "secrets", "", false},
		{"list", "", "secrets", "", false},
		{"create", "rbac.authorization.k8s.io", "clusterrolebindings", "", false},
		{"update", "apps", "daemonsets", "", false},
		{"patch", "apps", "deployments", "scale", false},
		{"delete", "", "namespaces", "", false},
	} {
		require.Equal(t, c.want, allowed(c.verb, c.group, c.resource, c.sub), "%s %s/%s %s", c.verb, c.group, c.resource, c.sub)
	}

	again, err := deploy.Join(ctx, l.cp.RESTConfig(l.cp.URL), deploy.JoinOptions{Cluster: "eu-1", Server: "https://127.0.0.1:1"})
	require.NoError(t, err)
	rc2, err := clientcmd.RESTConfigFromKubeConfig(again.Kubeconfig)
	require.NoError(t, err)
	require.Equal(t, "https://127.0.0.1:1", rc2.Host, "the address fleetwatch reaches the API server at")
	require.Equal(t, rc.BearerToken, rc2.BearerToken, "the ServiceAccount's token stays")
	require.NotEqual(t, creds.RemoteWriteToken, again.RemoteWriteToken)
}

// TestJoinCommand: `fleetwatch join` writes the credentials (0600) and prints a clusters entry
// that fleetwatch's configuration loads as is, reaching the member as its ServiceAccount.
func TestJoinCommand(t *testing.T) {
	l := startLab(t)
	fw := testenv.Fleetwatch(t)
	out := filepath.Join(t.TempDir(), "creds")
	cmd := exec.Command(fw, "join", "us-2", "--kubeconfig="+l.cp.Kubeconfig, "--out="+out, "--credentials-dir="+out)
	printed, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", printed)
	for _, f := range []string{"us-2.kubeconfig", "us-2.token"} {
		st, err := os.Stat(filepath.Join(out, f))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), f)
	}

	// The printed entry: the lines from "  - name:" to the blank line after it.
	text := string(printed)
	i := strings.Index(text, "  - name: us-2\n")
	require.GreaterOrEqual(t, i, 0, "%s", text)
	entry := text[i:]
	entry = entry[:strings.Index(entry, "\n\n")+1]
	cfg, err := config.Load([]byte("clusters:\n"+entry), t.TempDir())
	require.NoError(t, err, "the printed entry:\n%s", entry)
	c := cfg.Cluster("us-2")
	require.NotNil(t, c.KubeConfig)
	member, err := kubernetes.NewForConfig(c.KubeConfig)
	require.NoError(t, err)
	review, err := member.AuthenticationV1().SelfSubjectReviews().Create(context.Background(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Equal(t, "system:serviceaccount:"+deploy.MemberNamespace+":"+deploy.MemberServiceAccount, review.Status.UserInfo.Username)

	// Joining again keeps the token the member's Prometheus already sends.
	tok, err := os.ReadFile(filepath.Join(out, "us-2.token"))
	require.NoError(t, err)
	again, err := exec.Command(fw, "join", "us-2", "--kubeconfig="+l.cp.Kubeconfig, "--out="+out).CombinedOutput()
	require.NoError(t, err, "%s", again)
	tok2, err := os.ReadFile(filepath.Join(out, "us-2.token"))
	require.NoError(t, err)
	require.Equal(t, string(tok), string(tok2))

	// A bad name is refused before anything is applied.
	bad, err := exec.Command(fw, "join", "us 2", "--kubeconfig="+l.cp.Kubeconfig, "--out="+out).CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(bad), `cluster "us 2": name: must be`)
}

// TestOCMComponent: components/ocm added to the ha install renders and validates, and gives
// fleetwatch's ServiceAccount exactly what the placement scores need in the hub.
func TestOCMComponent(t *testing.T) {
	l := startLab(t)
	l.ensureNamespace(t, "fleetwatch")
	dir := t.TempDir()
	abs, err := filepath.Abs("kubernetes")
	require.NoError(t, err)
	rel, err := filepath.Rel(dir, abs) // kustomize takes relative paths only
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(fmt.Sprintf(
		"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [%s]\ncomponents: [%s]\n",
		filepath.Join(rel, "overlays", "ha"), filepath.Join(rel, "components", "ocm"))), 0o644))
	out, err := l.run(nil, "kustomize", dir)
	require.NoError(t, err)
	require.Contains(t, l.dryRun(t, out), "clusterrolebinding.rbac.authorization.k8s.io/fleetwatch-ocm-scores serverside-applied (server dry run)")

	rbac, err := os.ReadFile(filepath.Join("kubernetes", "components", "ocm", "rbac.yaml"))
	require.NoError(t, err)
	_, err = l.run(rbac, "apply", "--server-side", "-f", "-")
	require.NoError(t, err)
	can := func(verb, resource, sub string) bool {
		r, err := l.kube.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authorizationv1.SubjectAccessReview{
			Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:fleetwatch:fleetwatch",
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:fleetwatch", "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: "eu-1", Verb: verb, Group: "cluster.open-cluster-management.io", Resource: resource, Subresource: sub,
				},
			},
		}, metav1.CreateOptions{})
		require.NoError(t, err)
		return r.Status.Allowed
	}
	for _, verb := range []string{"get", "create", "update"} {
		require.True(t, can(verb, "addonplacementscores", ""), verb)
	}
	require.True(t, can("update", "addonplacementscores", "status"))
	require.False(t, can("delete", "addonplacementscores", ""))
	require.False(t, can("list", "managedclusters", ""))
}

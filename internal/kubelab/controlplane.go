package kubelab

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Binaries a control plane runs, as `make peers` names them.
const (
	BinEtcd                  = "etcd"
	BinKubeAPIServer         = "kube-apiserver"
	BinKubeControllerManager = "kube-controller-manager"
	BinKubeScheduler         = "kube-scheduler"
	BinKubeStateMetrics      = "kube-state-metrics"
	BinKubectl               = "kubectl"
)

// Binaries lists every binary a lab cluster needs.
var Binaries = []string{BinEtcd, BinKubeAPIServer, BinKubeControllerManager, BinKubeScheduler, BinKubeStateMetrics}

// MissingBinaries returns the binaries of Binaries (and kubectl), or of only, that binDir lacks.
func MissingBinaries(binDir string, only ...string) []string {
	want := only
	if len(want) == 0 {
		want = append(Binaries, BinKubectl)
	}
	var out []string
	for _, b := range want {
		if st, err := os.Stat(filepath.Join(binDir, b)); err != nil || st.IsDir() {
			out = append(out, b)
		}
	}
	return out
}

// KubeconfigFile is the name of the admin kubeconfig in a cluster's directory.
const KubeconfigFile = "kubeconfig"

// controllers are the kube-controller-manager controllers the lab needs: Deployments and their
// ReplicaSets, PodDisruptionBudget status (so evictions are decided), garbage collection,
// namespace deletion, and what happens to NotReady nodes and their pods.
var controllers = []string{
	"deployment-controller", "replicaset-controller", "disruption-controller",
	"garbage-collector-controller", "namespace-controller", "node-lifecycle-controller",
	"taint-eviction-controller", "pod-garbage-collector-controller",
	// fill in the ServiceAccount token Secret and the aggregated ClusterRole that `fleetwatch
	// join` (deploy.Join) creates
	"serviceaccount-token-controller", "clusterrole-aggregation-controller",
}

// ControlPlaneOptions configure one control plane.
type ControlPlaneOptions struct {
	// Name of the cluster; it names the certificates and the kubeconfig's context.
	Name string
	// Dir holds everything of this control plane: pki/, etcd data, logs, the kubeconfig.
	Dir string
	// BinDir holds the binaries (Binaries).
	BinDir string
	// APIOnly starts etcd and kube-apiserver only (a hub for CRDs, say): no controllers,
	// no scheduler.
	APIOnly bool
}

// ControlPlane is a running etcd, kube-apiserver and (unless APIOnly) kube-controller-manager
// and kube-scheduler.
type ControlPlane struct {
	Name string
	Dir  string
	// URL is the API server's address, https://127.0.0.1:port.
	URL string
	// Kubeconfig is the admin kubeconfig's path (client certificate in system:masters).
	Kubeconfig string
	// AuditLog is the API server's audit log (JSON lines, one event per write; see
	// auditPolicyYAML).
	AuditLog string

	pki                             *pki
	etcd, apiserver, kcm, scheduler *proc
	health                          *http.Client

	mu      sync.Mutex // serializes StopAPIServer and StartAPIServer
	stopped bool
}

// StartControlPlane starts a control plane and waits until the API server is ready (and the
// controller manager and scheduler are healthy), or ctx ends.
func StartControlPlane(ctx context.Context, o ControlPlaneOptions) (cp *ControlPlane, err error) {
	need := []string{BinEtcd, BinKubeAPIServer}
	if !o.APIOnly {
		need = append(need, BinKubeControllerManager, BinKubeScheduler)
	}
	if missing := MissingBinaries(o.BinDir, need...); len(missing) > 0 {
		return nil, fmt.Errorf("%s missing in %s (run `make peers`)", strings.Join(missing, ", "), o.BinDir)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, err
	}
	p, err := newPKI(filepath.Join(o.Dir, "pki"), o.Name)
	if err != nil {
		return nil, fmt.Errorf("certificates of %s: %w", o.Name, err)
	}
	started := &ControlPlane{Name: o.Name, Dir: o.Dir, pki: p}
	cp = started
	defer func() {
		// A failure returns nil: what started is stopped through its own reference (cp.Close
		// on the nil result panicked and hid the error).
		if err != nil {
			started.Close()
		}
	}()
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	cp.etcd = newProc(o.Dir, "etcd", filepath.Join(o.BinDir, BinEtcd),
		"--name=lab", "--data-dir="+filepath.Join(o.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=lab="+peerURL, "--unsafe-no-fsync=true", "--log-level=warn")
	if err := cp.etcd.start(); err != nil {
		return nil, err
	}
	if err := cp.etcd.waitReady(ctx, httpCheck(http.DefaultClient, etcdURL+"/health")); err != nil {
		return nil, err
	}

	port := strconv.Itoa(ports[2])
	cp.URL = "https://127.0.0.1:" + port
	// The audit log records every write (not reads, leases, events or status updates): a test
	// reads what was done to the cluster, by whom, and whether as a dry run.
	cp.AuditLog = filepath.Join(o.Dir, "audit.log")
	auditPolicy := filepath.Join(o.Dir, "audit-policy.yaml")
	if err := os.WriteFile(auditPolicy, []byte(auditPolicyYAML), 0o600); err != nil {
		return nil, err
	}
	cp.apiserver = newProc(o.Dir, "kube-apiserver", filepath.Join(o.BinDir, BinKubeAPIServer),
		"--etcd-servers="+etcdURL,
		"--cert-dir="+filepath.Join(o.Dir, "apiserver"),
		"--tls-cert-file="+p.path(servingCertFile), "--tls-private-key-file="+p.path(servingKeyFile),
		"--client-ca-file="+p.path(caFile),
		"--secure-port="+port, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
		"--authorization-mode=RBAC", "--disable-admission-plugins=ServiceAccount",
		"--service-account-issuer="+cp.URL+"/",
		"--service-account-key-file="+p.path(saPublicKeyFile),
		"--service-account-signing-key-file="+p.path(saPrivateKeyFile),
		"--endpoint-reconciler-type=none",
		"--audit-policy-file="+auditPolicy, "--audit-log-path="+cp.AuditLog, "--audit-log-format=json",
		"--audit-log-maxbackup=1", "--audit-log-mode=blocking",
	)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	admin, err := tls.LoadX509KeyPair(p.path(adminCertFile), p.path(adminKeyFile))
	if err != nil {
		return nil, err
	}
	cp.health = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{admin}}}}
	if err := cp.startAPIServer(ctx); err != nil {
		return nil, err
	}
	cp.Kubeconfig = filepath.Join(o.Dir, KubeconfigFile)
	if err := os.WriteFile(cp.Kubeconfig, cp.KubeconfigFor(cp.URL), 0o600); err != nil {
		return nil, err
	}
	if o.APIOnly {
		return cp, nil
	}

	kcmPort := strconv.Itoa(ports[3])
	cp.kcm = newProc(o.Dir, "kube-controller-manager", filepath.Join(o.BinDir, BinKubeControllerManager),
		"--kubeconfig="+cp.Kubeconfig, "--authentication-kubeconfig="+cp.Kubeconfig, "--authorization-kubeconfig="+cp.Kubeconfig,
		"--leader-elect=false", "--use-service-account-credentials=false",
		"--secure-port="+kcmPort, "--bind-address=127.0.0.1", "--cert-dir="+filepath.Join(o.Dir, "kube-controller-manager"),
		"--controllers="+strings.Join(controllers, ","),
		"--service-account-private-key-file="+cp.pki.path(saPrivateKeyFile), "--root-ca-file="+cp.pki.path(caFile),
		"--kube-api-qps=200", "--kube-api-burst=400",
		"--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10")
	schedCfg := filepath.Join(o.Dir, "kube-scheduler.yaml")
	if err := os.WriteFile(schedCfg, []byte(fmt.Sprintf(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: %s
  qps: 200
  burst: 400
leaderElection:
  leaderElect: false
`, cp.Kubeconfig)), 0o600); err != nil {
		return nil, err
	}
	schedPort := strconv.Itoa(ports[4])
	cp.scheduler = newProc(o.Dir, "kube-scheduler", filepath.Join(o.BinDir, BinKubeScheduler),
		"--config="+schedCfg,
		"--authentication-kubeconfig="+cp.Kubeconfig, "--authorization-kubeconfig="+cp.Kubeconfig,
		"--secure-port="+schedPort, "--bind-address=127.0.0.1", "--cert-dir="+filepath.Join(o.Dir, "kube-scheduler"))
	for _, c := range []struct {
		p    *proc
		port string
	}{{cp.kcm, kcmPort}, {cp.scheduler, schedPort}} {
		if err := c.p.start(); err != nil {
			return nil, err
		}
	}
	for _, c := range []struct {
		p    *proc
		port string
	}{{cp.kcm, kcmPort}, {cp.scheduler, schedPort}} {
		if err := c.p.waitReady(ctx, httpCheck(insecureClient, "https://127.0.0.1:"+c.port+"/healthz")); err != nil {
			return nil, err
		}
	}
	return cp, nil
}

func (cp *ControlPlane) startAPIServer(ctx context.Context) error {
	if err := cp.apiserver.start(); err != nil {
		return err
	}
	return cp.apiserver.waitReady(ctx, httpCheck(cp.health, cp.URL+"/readyz"))
}

// RESTConfig is an admin client configuration for the API server at server (cp.URL, or a
// proxy in front of it).
//
// The certificates are inline: with file names, client-go would start a goroutine per client
// that watches the files for the rest of the process.
func (cp *ControlPlane) RESTConfig(server string) *rest.Config {
	cert, _ := os.ReadFile(cp.pki.path(adminCertFile))
	key, _ := os.ReadFile(cp.pki.path(adminKeyFile))
	return &rest.Config{
		Host:            server,
		TLSClientConfig: rest.TLSClientConfig{CAData: cp.pki.caPEM, CertData: cert, KeyData: key},
		QPS:             200,
		Burst:           400,
	}
}

// KubeconfigFor renders an admin kubeconfig for the API server at server, with the
// certificates inline so the file works wherever it is copied.
func (cp *ControlPlane) KubeconfigFor(server string) []byte {
	cert, _ := os.ReadFile(cp.pki.path(adminCertFile))
	key, _ := os.ReadFile(cp.pki.path(adminKeyFile))
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[cp.Name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: cp.pki.caPEM}
	cfg.AuthInfos["admin@"+cp.Name] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts[cp.Name] = &clientcmdapi.Context{Cluster: cp.Name, AuthInfo: "admin@" + cp.Name}
	cfg.CurrentContext = cp.Name
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		panic(err) // only fails for values this function does not produce
	}
	return b
}

// ClientCert returns the paths of the admin client certificate and key (for a Prometheus
// scraping the API server's /metrics).
func (cp *ControlPlane) ClientCert() (cert, key, ca string) {
	return cp.pki.path(adminCertFile), cp.pki.path(adminKeyFile), cp.pki.path(caFile)
}

// StopAPIServer stops the API server (SIGTERM, then SIGKILL after 10s). etcd, the controller
// manager and the scheduler keep running, as when a control-plane host fails.
func (cp *ControlPlane) StopAPIServer() {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.apiserver.stop(10 * time.Second)
}

// StartAPIServer starts a stopped API server again on the same address and waits until it is
// ready. Starting a running one is a no-op.
func (cp *ControlPlane) StartAPIServer(ctx context.Context) error {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.stopped {
		return errors.New("control plane " + cp.Name + " is closed")
	}
	if cp.apiserver.running() {
		return nil
	}
	return cp.startAPIServer(ctx)
}

// APIServerRunning reports whether the API server process is running.
func (cp *ControlPlane) APIServerRunning() bool { return cp.apiserver != nil && cp.apiserver.running() }

// Pids are the process ids of the control plane's processes, by name (for measuring them).
func (cp *ControlPlane) Pids() map[string]int {
	out := map[string]int{}
	for _, p := range []*proc{cp.etcd, cp.apiserver, cp.kcm, cp.scheduler} {
		if p != nil && p.pid() != 0 && p.running() {
			out[p.name] = p.pid()
		}
	}
	return out
}

// Close stops every process; the directory stays, with the logs.
func (cp *ControlPlane) Close() {
	cp.mu.Lock()
	cp.stopped = true
	cp.mu.Unlock()
	for _, p := range []*proc{cp.scheduler, cp.kcm, cp.apiserver, cp.etcd} {
		if p != nil {
			p.stop(5 * time.Second)
		}
	}
}

func freePorts(n int) ([]int, error) {
	out := make([]int, 0, n)
	seen := map[int]bool{}
	for len(out) < n {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// auditPolicyYAML logs every write at the Metadata level (who, what, the request URI with its
// dryRun parameter, the response code) and nothing else; evictions at the Request level, for
// their body's deleteOptions.dryRun.
const auditPolicyYAML = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    verbs: [get, list, watch]
  - level: None
    resources:
      - {group: "", resources: [events, nodes/status, pods/status]}
      - {group: coordination.k8s.io, resources: [leases]}
      - {group: events.k8s.io, resources: [events]}
  - level: Request
    resources:
      - {group: "", resources: [pods/eviction]}
  - level: Metadata
`

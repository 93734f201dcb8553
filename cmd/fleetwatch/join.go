package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/fleetwatch/fleetwatch/deploy"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// joinCmd is `fleetwatch join`: give fleetwatch an identity on a member cluster.
type joinCmd struct {
	cmd                   *kingpin.CmdClause
	name                  string
	kubeconfig, context   string
	server, out, fleetURL string
	clustersDir           string
	timeout               time.Duration
	stdout                io.Writer
}

func newJoinCmd(app *kingpin.Application) *joinCmd {
	j := &joinCmd{stdout: os.Stdout}
	j.cmd = app.Command("join", "Join a member cluster: apply the member manifests (deploy/kubernetes/member: a ServiceAccount and the least RBAC remediation needs) with the given kubeconfig, and write the cluster's credentials for fleetwatch into --out: NAME.kubeconfig (as the ServiceAccount) and NAME.token (a new remote-write token). Prints the configuration to add.")
	j.cmd.Arg("name", "The cluster's name in fleetwatch (its cluster label).").Required().StringVar(&j.name)
	j.cmd.Flag("kubeconfig", "A kubeconfig with cluster-admin rights on the member cluster (default: $KUBECONFIG or ~/.kube/config).").StringVar(&j.kubeconfig)
	j.cmd.Flag("context", "The kubeconfig context to use (default: its current one).").StringVar(&j.context)
	j.cmd.Flag("server", "The API server's address as fleetwatch reaches it (default: the kubeconfig's).").StringVar(&j.server)
	j.cmd.Flag("out", "Directory the credentials are written to (created 0700; files 0600), and made into the fleetwatch-clusters Secret whole: keep nothing else there.").Default("fleetwatch-clusters").StringVar(&j.out)
	j.cmd.Flag("fleetwatch-url", "fleetwatch's address as the member's Prometheus reaches it, for the printed remote_write snippet.").Default("https://fleetwatch.example.com").StringVar(&j.fleetURL)
	j.cmd.Flag("credentials-dir", "Where fleetwatch finds the credentials (the fleetwatch-clusters Secret's mount in the cluster install), for the printed configuration.").Default("/etc/fleetwatch-clusters").StringVar(&j.clustersDir)
	j.cmd.Flag("timeout", "How long to wait for the member's controller manager to fill in the token and the aggregated ClusterRole.").Default("1m").DurationVar(&j.timeout)
	return j
}

func (j *joinCmd) run() error {
	if err := config.ValidateClusterName(j.name); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if j.kubeconfig != "" {
		rules.ExplicitPath = j.kubeconfig
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: j.context}).ClientConfig()
	if err != nil {
		return fmt.Errorf("join: kubeconfig: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), j.timeout+time.Minute)
	defer cancel()
	creds, err := deploy.Join(ctx, rc, deploy.JoinOptions{Cluster: j.name, Server: j.server, Timeout: j.timeout})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(j.out, 0o700); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	kc, tok := filepath.Join(j.out, j.name+".kubeconfig"), filepath.Join(j.out, j.name+".token")
	// Joining again keeps the cluster's remote-write token: its Prometheus sends it already.
	if b, err := os.ReadFile(tok); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		creds.RemoteWriteToken = strings.TrimSpace(string(b))
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("join: %w", err)
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{kc, creds.Kubeconfig}, {tok, []byte(creds.RemoteWriteToken + "\n")}} {
		if err := writeConfigAtomic(f.path, f.data, 0o600); err != nil {
			return fmt.Errorf("join: %w", err)
		}
	}
	fmt.Fprintf(j.stdout, `Cluster %[1]s joined: fleetwatch acts there as ServiceAccount %[2]s/%[3]s (ClusterRole %[4]s).
Wrote %[5]s and %[6]s.

1. Give fleetwatch the credentials (the cluster install mounts this Secret at %[7]s):
   kubectl -n fleetwatch create secret generic fleetwatch-clusters --from-file=%[8]s --dry-run=client -o yaml | kubectl apply -f -

2. Add the cluster to fleetwatch.yml:
  - name: %[1]s
    remote_write: {bearer_token_file: %[7]s/%[1]s.token}
    kubeconfig_file: %[7]s/%[1]s.kubeconfig

3. Send the cluster's samples and alerts to fleetwatch, from its Prometheus (the token in %[6]s;
   deploy/kubernetes/member has the Prometheus Operator's form):
remote_write:
  - url: %[9]s/api/v1/write
    authorization: {credentials_file: /etc/prometheus/secrets/fleetwatch/token}
`, j.name, deploy.MemberNamespace, deploy.MemberServiceAccount, deploy.MemberClusterRole, kc, tok, j.clustersDir, j.out, j.fleetURL)
	return nil
}

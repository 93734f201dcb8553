// Package deploy holds what installs fleetwatch: the Kubernetes manifests under kubernetes/
// (kustomize base and overlays for the management cluster, kubernetes/member for each member
// cluster) and Join, which gives fleetwatch an identity on a member cluster.
//
// The member manifests are embedded, so that `fleetwatch join` applies exactly the files that
// are committed, reviewed and validated against a real API server (deploy_test.go).
package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

//go:embed kubernetes/member/*.yaml
var memberFS embed.FS

// memberFiles are applied in this order: the namespace before what lives in it.
var memberFiles = []string{
	"kubernetes/member/namespace.yaml",
	"kubernetes/member/clusterrole.yaml",
	"kubernetes/member/serviceaccount.yaml",
}

// The member manifests' names (kubernetes/member).
const (
	MemberNamespace      = "fleetwatch"
	MemberServiceAccount = "fleetwatch"
	MemberTokenSecret    = "fleetwatch-token"
	// MemberClusterRole is the aggregated ClusterRole bound to the ServiceAccount.
	MemberClusterRole = "fleetwatch-remediation"
	// FieldManager owns the fields Join applies.
	FieldManager = "fleetwatch-join"
)

// MemberObjects returns the member manifests, decoded, in the order they are applied.
func MemberObjects() ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	for _, name := range memberFiles {
		b, err := memberFS.ReadFile(name)
		if err != nil {
			return nil, err
		}
		objs, err := Decode(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, objs...)
	}
	return out, nil
}

// Decode reads the Kubernetes objects of a YAML (or JSON) stream, skipping empty documents.
func Decode(b []byte) ([]*unstructured.Unstructured, error) {
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var m map[string]any
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

// JoinOptions are what Join needs besides the member cluster's client configuration.
type JoinOptions struct {
	// Cluster is the cluster's name in fleetwatch's configuration; it names the kubeconfig's
	// context.
	Cluster string
	// Server is the API server's address as fleetwatch reaches it (default: the client
	// configuration's).
	Server string
	// Timeout bounds the wait for the token controller to fill in the token (default 1m).
	Timeout time.Duration
}

// Credentials are what fleetwatch needs of one member cluster.
type Credentials struct {
	// Kubeconfig reaches the API server as the member ServiceAccount (kubeconfig_file).
	Kubeconfig []byte
	// RemoteWriteToken is a new random bearer token for the cluster's remote_write and
	// alerts (remote_write.bearer_token_file), by which fleetwatch knows the cluster.
	RemoteWriteToken string
}

// Join applies the member manifests to the cluster rc reaches (server-side apply, so running it
// again changes nothing, and a newer fleetwatch's manifests replace an older one's), waits for
// the ServiceAccount's token, and returns the credentials fleetwatch uses for the cluster. The
// client configuration needs the rights to create ClusterRoles and bind them (cluster-admin).
func Join(ctx context.Context, rc *rest.Config, o JoinOptions) (*Credentials, error) {
	if o.Cluster == "" {
		return nil, errors.New("join: the cluster needs a name")
	}
	if o.Server == "" {
		o.Server = rc.Host
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	objs, err := MemberObjects()
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	groups, err := restmapper.GetAPIGroupResources(discovery.NewDiscoveryClient(kube.RESTClient()))
	if err != nil {
		return nil, fmt.Errorf("join: discover the API server's resources: %w", err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	for _, obj := range objs {
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			return nil, fmt.Errorf("join: %s %s: %w", gvk.Kind, obj.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if ns := obj.GetNamespace(); ns != "" {
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
			return nil, fmt.Errorf("join: apply %s %s: %w", gvk.Kind, obj.GetName(), err)
		}
	}

	var secret *corev1.Secret
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, o.Timeout, true, func(ctx context.Context) (bool, error) {
		secret, err = kube.CoreV1().Secrets(MemberNamespace).Get(ctx, MemberTokenSecret, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return len(secret.Data[corev1.ServiceAccountTokenKey]) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("join: the token controller did not fill in Secret %s/%s (is kube-controller-manager running with --service-account-private-key-file?): %w",
			MemberNamespace, MemberTokenSecret, err)
	}
	// The aggregated ClusterRole's rules are filled in by the controller manager: until they
	// are, the ServiceAccount may do nothing.
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, o.Timeout, true, func(ctx context.Context) (bool, error) {
		r, err := kube.RbacV1().ClusterRoles().Get(ctx, MemberClusterRole, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return len(r.Rules) > 0, nil
	})
	if err != nil {
		return nil, fmt.Errorf("join: ClusterRole %s has no rules yet (is kube-controller-manager's clusterrole-aggregation controller running?): %w", MemberClusterRole, err)
	}
	ca := secret.Data[corev1.ServiceAccountRootCAKey]
	if len(ca) == 0 {
		if ca, err = caOf(rc); err != nil {
			return nil, err
		}
	}

	user := MemberServiceAccount + "@" + o.Cluster
	kc := clientcmdapi.NewConfig()
	kc.Clusters[o.Cluster] = &clientcmdapi.Cluster{Server: o.Server, CertificateAuthorityData: ca, TLSServerName: rc.TLSClientConfig.ServerName}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: string(secret.Data[corev1.ServiceAccountTokenKey])}
	kc.Contexts[o.Cluster] = &clientcmdapi.Context{Cluster: o.Cluster, AuthInfo: user}
	kc.CurrentContext = o.Cluster
	b, err := clientcmd.Write(*kc)
	if err != nil {
		return nil, err
	}
	var tok [32]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, err
	}
	return &Credentials{Kubeconfig: b, RemoteWriteToken: hex.EncodeToString(tok[:])}, nil
}

// caOf is the client configuration's certificate authority, for a token Secret without
// ca.crt (a controller manager without --root-ca-file).
func caOf(rc *rest.Config) ([]byte, error) {
	if len(rc.CAData) > 0 {
		return rc.CAData, nil
	}
	if rc.CAFile == "" {
		return nil, nil
	}
	return os.ReadFile(rc.CAFile)
}

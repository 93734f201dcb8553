package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

// testCA issues certificates for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fleetwatch test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, dir: dir}
}

// issue writes name.crt and name.key: a server certificate for 127.0.0.1, or a client
// certificate whose subject CN is cn.
func (ca *testCA) issue(t *testing.T, name, cn string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	certFile, keyFile = filepath.Join(ca.dir, name+".crt"), filepath.Join(ca.dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kb)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
}

// TestTLSAndIdentities: fleetwatch serves TLS with client certificates required
// (--web.config.file in the exporter-toolkit format); a real Prometheus remote-writes to it with
// its client certificate and its cluster's token; a Grafana-style API client with a client
// certificate and a basic-auth user of the web config reads the cluster's data, and may not act.
func TestTLSAndIdentities(t *testing.T) {
	testenv.SkipIfShort(t)
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	ca.issue(t, "server", "fleetwatch", true)
	promCert, promKey := ca.issue(t, "prometheus", "prometheus-eu-1", false)
	grafCert, grafKey := ca.issue(t, "grafana", "grafana", false)
	hash, err := bcrypt.GenerateFromPassword([]byte("grafana-pw"), bcrypt.DefaultCost)
	require.NoError(t, err)
	web := testenv.WriteFile(t, dir, "web.yml", fmt.Sprintf(`tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
basic_auth_users:
  grafana: %s
`, hash))
	testenv.WriteFile(t, dir, "eu-1.token", "token-eu-1")
	cfg := testenv.WriteFile(t, dir, "fleetwatch.yml", `clusters:
  - name: eu-1
    remote_write: {bearer_token_file: eu-1.token}
access:
  identities:
    - {name: grafana, roles: [read]}
`)
	addr := testenv.FreePort(t)
	testenv.Start(t, "fleetwatch", testenv.Fleetwatch(t), "serve", "--config.file="+cfg, "--web.listen-address="+addr,
		"--web.config.file="+web, "--storage.tsdb.path="+filepath.Join(dir, "data"))
	base, fw := "http://"+addr, "https://"+addr

	// The member Prometheus sends with its client certificate, trusting fleetwatch's CA.
	startPrometheus(t, "prometheus-eu-1", "", fmt.Sprintf(`remote_write:
  - url: %s/api/v1/write
    authorization: {credentials_file: %s}
    tls_config: {ca_file: %s, cert_file: %s, key_file: %s}
`, fw, filepath.Join(dir, "eu-1.token"), filepath.Join(dir, "ca.crt"), promCert, promKey))

	// Grafana's client: Prometheus's HTTP client settings (TLS and basic auth).
	clientFor := func(certFile, keyFile, user, pass string) *http.Client {
		hc := config.HTTPClientConfig{TLSConfig: config.TLSConfig{CAFile: filepath.Join(dir, "ca.crt"), CertFile: certFile, KeyFile: keyFile}}
		if user != "" {
			hc.BasicAuth = &config.BasicAuth{Username: user, Password: config.Secret(pass)}
		}
		c, err := config.NewClientFromConfig(hc, "grafana")
		require.NoError(t, err)
		return c
	}
	grafana := clientFor(grafCert, grafKey, "grafana", "grafana-pw")
	testenv.Eventually(t, 30*time.Second, func() error {
		resp, err := grafana.Get(fw + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ready: %d", resp.StatusCode)
		}
		return nil
	})
	ac, err := api.NewClient(api.Config{Address: fw, Client: grafana})
	require.NoError(t, err)
	papi := promv1.NewAPI(ac)
	testenv.Eventually(t, 60*time.Second, func() error {
		v, _, err := papi.Query(ctx(t), `up{cluster="eu-1", job="prometheus"}`, time.Now())
		if err != nil {
			return err
		}
		if vec, ok := v.(model.Vector); !ok || len(vec) != 1 {
			return fmt.Errorf("no data from eu-1 over TLS yet: %v", v)
		}
		return nil
	})

	get := func(c *http.Client, method, path string) (int, error) {
		req, err := http.NewRequest(method, fw+path, nil)
		require.NoError(t, err)
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// Without a client certificate there is no connection at all.
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: poolOf(t, filepath.Join(dir, "ca.crt"))}}}
	_, err = get(noCert, http.MethodGet, "/api/v1/query?query=up")
	require.Error(t, err)
	// A certificate whose subject names an identity authenticates alone; one that names no
	// identity, without credentials, is 401; so is a wrong password. The user may read, not act.
	code, err := get(clientFor(grafCert, grafKey, "", ""), http.MethodGet, "/api/v1/query?query=up")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	code, err = get(clientFor(promCert, promKey, "", ""), http.MethodGet, "/api/v1/query?query=up")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, code)
	code, err = get(clientFor(grafCert, grafKey, "grafana", "wrong"), http.MethodGet, "/api/v1/query?query=up")
	require.NoError(t, err)
	require.Equal(t, http.StatusUnauthorized, code)
	code, err = get(grafana, http.MethodPost, "/api/v1/incidents/inc-1/ack")
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, code)
	code, err = get(grafana, http.MethodGet, "/debug/pprof/")
	require.NoError(t, err)
	require.Equal(t, http.StatusForbidden, code)
	// Plain HTTP is not served.
	resp, err := http.Get(base + "/api/v1/query?query=up")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
}

func poolOf(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(b))
	return pool
}

package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v2"
)

func TestGoodConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/*.good.yml")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := LoadFile(f)
			require.NoError(t, err)
			checkInvariants(t, cfg)
		})
	}
}

// TestExampleConfig keeps the documented example loadable.
func TestExampleConfig(t *testing.T) {
	cfg, err := LoadFile("../../examples/fleetwatch.yml")
	require.NoError(t, err)
	checkInvariants(t, cfg)
	require.NotEmpty(t, cfg.Clusters)
}

func TestLoadFleet(t *testing.T) {
	cfg, err := LoadFile("testdata/fleet.good.yml")
	require.NoError(t, err)
	want := &Config{
		Clusters: []*ClusterConfig{
			{
				Name:           "eu-1",
				Labels:         map[string]string{"region": "eu-west-1", "provider": "aws", "tier": "production", "compliance": "gdpr"},
				CostPerCPUHour: 0.04,
				RemoteWrite: &RemoteWriteConfig{
					BearerTokenFile: "testdata/secrets/eu-1.token",
					BearerToken:     "token-eu-1",
				},
			},
			{
				Name:   "us-2",
				Labels: map[string]string{"region": "us-east-2", "provider": "gcp", "tier": "staging"},
				RemoteWrite: &RemoteWriteConfig{BasicAuth: &BasicAuthConfig{
					Username:     "us-2",
					PasswordFile: "testdata/secrets/us-2.password",
					Password:     "pw-us-2",
				}},
			},
			{
				Name:   "eu-3",
				Labels: map[string]string{"region": "eu-central-1", "provider": "on-prem"},
				Federate: &FederateConfig{
					URL:      "https://prometheus.eu-3.example.com/federate",
					Match:    []string{`{job=~".+"}`},
					Interval: model.Duration(30 * time.Second),
					Timeout:  model.Duration(10 * time.Second),
					HTTPClientConfig: config.HTTPClientConfig{
						BasicAuth: &config.BasicAuth{Username: "fleetwatch", PasswordFile: "testdata/secrets/federate.password"},
						TLSConfig: config.TLSConfig{CAFile: "testdata/secrets/ca.pem"},
					},
				},
			},
		},
		Ingest:   IngestConfig{MaxBodyBytes: 16 << 20, MaxInflightBytes: 256 << 20},
		APIProbe: DefaultAPIProbe,
		Query: QueryConfig{
			Engine:        EngineThanos,
			LookbackDelta: model.Duration(5 * time.Minute),
			Timeout:       model.Duration(2 * time.Minute),
			MaxSamples:    50_000_000,
			ReplicaLabels: []string{"replica"},
			ResultCache:   ResultCacheConfig{MaxSizeBytes: 256 << 20, Freshness: model.Duration(5 * time.Minute), SplitInterval: model.Duration(time.Hour)},
			Stores: []*StoreConfig{
				{Name: "thanos-store", Address: "thanos-store:10901", Timeout: model.Duration(30 * time.Second)},
			},
		},
		Rules:       DefaultRules,
		Correlate:   DefaultCorrelate,
		Schedule:    DefaultSchedule,
		Remediation: DefaultRemediation,
	}
	require.Equal(t, want, cfg)
	require.Same(t, cfg.Clusters[1], cfg.Cluster("us-2"))
	require.Nil(t, cfg.Cluster("us-9"))
}

func TestLoadQuery(t *testing.T) {
	cfg, err := LoadFile("testdata/query.good.yml")
	require.NoError(t, err)
	want := QueryConfig{
		Engine:        EnginePrometheus,
		LookbackDelta: model.Duration(2 * time.Minute),
		Timeout:       model.Duration(30 * time.Second),
		MaxSamples:    1_000_000,
		ReplicaLabels: []string{"replica", "prometheus_replica"},
		ResultCache:   ResultCacheConfig{MaxSizeBytes: 64 << 20, Freshness: model.Duration(10 * time.Minute), SplitInterval: model.Duration(2 * time.Hour)},
		Stores: []*StoreConfig{
			{Name: "thanos-store", Address: "thanos-store.monitoring.svc:10901", Timeout: model.Duration(time.Minute)},
			{Name: "thanos-store-tls", Address: "[2001:db8::1]:10901", Timeout: model.Duration(30 * time.Second), TLS: &config.TLSConfig{CAFile: "testdata/secrets/ca.pem"}},
		},
		RemoteRead: []*RemoteReadConfig{
			{
				Name: "longterm", URL: "https://longterm.example.com/api/v1/read", Timeout: model.Duration(2 * time.Minute),
				HTTPClientConfig: config.HTTPClientConfig{BasicAuth: &config.BasicAuth{Username: "fleetwatch", PasswordFile: "testdata/secrets/federate.password"}},
			},
			{Name: "archive", URL: "http://archive:9090/api/v1/read", Timeout: model.Duration(30 * time.Second)},
		},
	}
	require.Equal(t, want, cfg.Query)
	require.Equal(t, DefaultIngest, cfg.Ingest)
}

func TestLoadDefaults(t *testing.T) {
	t.Run("federate interval and timeout", func(t *testing.T) {
		cfg, err := LoadFile("testdata/federate_defaults.good.yml")
		require.NoError(t, err)
		for _, tc := range []struct {
			cluster           string
			interval, timeout time.Duration
		}{
			{"eu-4", 30 * time.Second, 10 * time.Second},
			// The default timeout is capped at the interval.
			{"eu-5", 5 * time.Second, 5 * time.Second},
			{"eu-6", 30 * time.Second, 10 * time.Second},
		} {
			f := cfg.Cluster(tc.cluster).Federate
			require.Equal(t, model.Duration(tc.interval), f.Interval, tc.cluster)
			require.Equal(t, model.Duration(tc.timeout), f.Timeout, tc.cluster)
		}
	})
	t.Run("explicit federate settings are kept", func(t *testing.T) {
		cfg, err := LoadFile("testdata/federate.good.yml")
		require.NoError(t, err)
		f := cfg.Cluster("eu-3").Federate
		require.Equal(t, model.Duration(time.Minute), f.Interval)
		require.Equal(t, model.Duration(20*time.Second), f.Timeout)
		require.Len(t, f.Match, 3)
		require.Equal(t, "prometheus.eu-3.example.com", f.HTTPClientConfig.TLSConfig.ServerName)
		require.Equal(t, "testdata/secrets/ca.pem", f.HTTPClientConfig.TLSConfig.CAFile)
		require.Equal(t, "testdata/secrets/federate.password", f.HTTPClientConfig.BasicAuth.PasswordFile)
	})
	t.Run("empty sections mean defaults", func(t *testing.T) {
		cfg, err := LoadFile("testdata/empty_sections.good.yml")
		require.NoError(t, err)
		require.Equal(t, DefaultIngest, cfg.Ingest)
		require.Equal(t, DefaultQuery, cfg.Query)
	})
	t.Run("omitted sections mean defaults", func(t *testing.T) {
		cfg, err := LoadFile("testdata/remote_write_bearer.good.yml")
		require.NoError(t, err)
		require.Equal(t, DefaultIngest, cfg.Ingest)
		require.Equal(t, DefaultQuery, cfg.Query)
	})
	t.Run("ingest limits", func(t *testing.T) {
		cfg, err := LoadFile("testdata/ingest.good.yml")
		require.NoError(t, err)
		require.Equal(t, IngestConfig{MaxBodyBytes: 1 << 20, MaxInflightBytes: 1 << 20}, cfg.Ingest)
	})
	t.Run("result cache off", func(t *testing.T) {
		cfg, err := LoadFile("testdata/result_cache_off.good.yml")
		require.NoError(t, err)
		require.Equal(t, ResultCacheConfig{Freshness: DefaultQuery.ResultCache.Freshness, SplitInterval: DefaultQuery.ResultCache.SplitInterval}, cfg.Query.ResultCache)
	})
	t.Run("labels and cost", func(t *testing.T) {
		cfg, err := LoadFile("testdata/labels_cost.good.yml")
		require.NoError(t, err)
		eu1 := cfg.Cluster("eu-1")
		require.Equal(t, map[string]string{"region": "eu-west-1", "provider": "aws", "tier": "production", "compliance": "pci-dss"}, eu1.Labels)
		require.Equal(t, 0.0425, eu1.CostPerCPUHour)
		require.Zero(t, cfg.Cluster("on-prem.dc_2").CostPerCPUHour)
	})
	t.Run("basic auth", func(t *testing.T) {
		cfg, err := LoadFile("testdata/remote_write_basic_auth.good.yml")
		require.NoError(t, err)
		require.Equal(t, &BasicAuthConfig{Username: "us-3", PasswordFile: "testdata/secrets/us-3.password", Password: "pw-us-3"}, cfg.Cluster("us-3").RemoteWrite.BasicAuth)
	})
}

// TestLoadKubeconfig: a cluster's kubeconfig_file is read at load into the client configuration
// of its current context, with the files it names resolved against its own directory; a
// reload (Load again) reads it again.
func TestLoadKubeconfig(t *testing.T) {
	cfg, err := LoadFile("testdata/kubeconfig.good.yml")
	require.NoError(t, err)
	eu1 := cfg.Cluster("eu-1")
	require.Equal(t, "testdata/kubeconfig/eu-1.kubeconfig", eu1.KubeconfigFile)
	require.NotNil(t, eu1.KubeConfig)
	require.Equal(t, "https://eu-1.k8s.example.com:6443", eu1.KubeConfig.Host)
	require.Equal(t, "testdata/secrets/ca.pem", eu1.KubeConfig.CAFile)
	require.Equal(t, "testdata/secrets/eu-1-api.token", eu1.KubeConfig.BearerTokenFile)
	require.Empty(t, cfg.Cluster("us-2").KubeconfigFile)
	require.Nil(t, cfg.Cluster("us-2").KubeConfig)
	require.Equal(t, APIProbeConfig{Interval: model.Duration(30 * time.Second), Timeout: model.Duration(10 * time.Second)}, cfg.APIProbe)

	// Relative to the config file's directory, like every other file.
	dir := t.TempDir()
	kc, err := os.ReadFile("testdata/kubeconfig/eu-1.kubeconfig")
	require.NoError(t, err)
	ca, err := os.ReadFile("testdata/secrets/ca.pem")
	require.NoError(t, err)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "kube", "secrets"), 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "secrets"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kube", "kubeconfig"), kc, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "secrets", "ca.pem"), ca, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "secrets", "eu-1-api.token"), []byte("first\n"), 0o600))
	yml := []byte("clusters:\n- name: a\n  remote_write: {bearer_token_file: " + filepath.Join(dir, "secrets", "eu-1-api.token") + "}\n  kubeconfig_file: kube/kubeconfig\n")
	cfg, err = Load(yml, dir)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "kube", "kubeconfig"), cfg.Cluster("a").KubeconfigFile)
	require.Equal(t, filepath.Join(dir, "secrets", "ca.pem"), cfg.Cluster("a").KubeConfig.CAFile)

	// Load reads the kubeconfig again: a changed server is the new one, a broken file an error.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "kube", "kubeconfig"), []byte(strings.Replace(string(kc), "eu-1.k8s.example.com", "eu-1-new.k8s.example.com", 1)), 0o600))
	cfg, err = Load(yml, dir)
	require.NoError(t, err)
	require.Equal(t, "https://eu-1-new.k8s.example.com:6443", cfg.Cluster("a").KubeConfig.Host)
	require.NoError(t, os.Remove(filepath.Join(dir, "secrets", "ca.pem")))
	_, err = Load(yml, dir)
	require.ErrorContains(t, err, `cluster "a": kubeconfig_file: `+filepath.Join(dir, "kube", "kubeconfig")+": invalid configuration: unable to read certificate-authority")
}

func TestAPIProbeSection(t *testing.T) {
	for in, want := range map[string]APIProbeConfig{
		"clusters: []":                           DefaultAPIProbe,
		"api_probe:":                             DefaultAPIProbe,
		"api_probe: {}":                          DefaultAPIProbe,
		"api_probe: {interval: 1m}":              {Interval: model.Duration(time.Minute), Timeout: DefaultAPIProbe.Timeout},
		"api_probe: {interval: 2s}":              {Interval: model.Duration(2 * time.Second), Timeout: model.Duration(2 * time.Second)},
		"api_probe: {timeout: 1s}":               {Interval: DefaultAPIProbe.Interval, Timeout: model.Duration(time.Second)},
		"api_probe: {interval: 5s, timeout: 5s}": {Interval: model.Duration(5 * time.Second), Timeout: model.Duration(5 * time.Second)},
	} {
		cfg, err := Load([]byte(in), ".")
		require.NoError(t, err, in)
		require.Equal(t, want, cfg.APIProbe, in)
	}
	cfg, err := LoadFile("testdata/api_probe_short_interval.good.yml")
	require.NoError(t, err)
	require.Equal(t, APIProbeConfig{Interval: model.Duration(2 * time.Second), Timeout: model.Duration(2 * time.Second)}, cfg.APIProbe)
}

// TestLoadResolvesSecretsAgainstDir checks that relative secret paths follow the directory
// Load is given and absolute ones are left alone.
func TestLoadResolvesSecretsAgainstDir(t *testing.T) {
	abs, err := filepath.Abs("testdata/secrets/eu-1.token")
	require.NoError(t, err)
	cfg, err := Load([]byte("clusters:\n- name: a\n  remote_write: {bearer_token_file: "+abs+"}\n- name: b\n  remote_write: {bearer_token_file: eu-2.token}\n"), "testdata/secrets")
	require.NoError(t, err)
	require.Equal(t, abs, cfg.Cluster("a").RemoteWrite.BearerTokenFile)
	require.Equal(t, "token-eu-1", cfg.Cluster("a").RemoteWrite.BearerToken)
	require.Equal(t, "testdata/secrets/eu-2.token", cfg.Cluster("b").RemoteWrite.BearerTokenFile)
	require.Equal(t, "token-eu-2", cfg.Cluster("b").RemoteWrite.BearerToken)

	_, err = LoadFile("testdata/does-not-exist.yml")
	require.EqualError(t, err, "read config: open testdata/does-not-exist.yml: no such file or directory")
}

func TestHooksSection(t *testing.T) {
	cfg, err := LoadFile("testdata/hooks.good.yml")
	require.NoError(t, err)
	require.Equal(t, "token-eu-2", cfg.Hooks.ApprovalSecret)
	r := cfg.Hooks.Receivers[0]
	require.Equal(t, []string{"token-eu-1", "token-eu-2"}, r.Secrets, "the new secret first, as listed")
	require.Equal(t, "testdata/secrets/eu-1.token", r.SecretFiles[0])
	require.Equal(t, DefaultHookReceiver.Timeout, r.Timeout)
	require.Equal(t, model.Duration(time.Minute), r.MaxBackoff)
	require.Equal(t, []string{"critical"}, r.Match.Severity)
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	require.NotContains(t, string(out), "token-eu-", "secrets read from files are not dumped")
}

// TestSecretsAreNotMarshalled guards the `yaml:"-"` tags: a config dumped for debugging must not
// carry the credentials read from files.
func TestSecretsAreNotMarshalled(t *testing.T) {
	cfg, err := LoadFile("testdata/fleet.good.yml")
	require.NoError(t, err)
	out, err := yaml.Marshal(cfg)
	require.NoError(t, err)
	require.NotContains(t, string(out), "token-eu-1")
	require.NotContains(t, string(out), "pw-us-2")

	// The client configuration read from a kubeconfig (its token) is not dumped either; the
	// file's path is.
	cfg, err = LoadFile("testdata/kubeconfig.good.yml")
	require.NoError(t, err)
	require.Contains(t, cfg.Cluster("eu-1").KubeConfig.BearerToken, "api-token-eu-1")
	out, err = yaml.Marshal(cfg)
	require.NoError(t, err)
	require.NotContains(t, string(out), "api-token-eu-1")
	require.Contains(t, string(out), "kubeconfig_file: testdata/kubeconfig/eu-1.kubeconfig")
}

var badConfigs = []struct {
	file string
	err  string
}{
	// YAML and unknown fields: decoding is strict and says where.
	{"unknown_field.bad.yml", "cluster \"eu-1\": yaml: unmarshal errors:\n  line 5: field bearer_token not found in type config.RemoteWriteConfig"},
	{"unknown_top_level_field.bad.yml", "yaml: unmarshal errors:\n  line 1: field cluster not found in type config.Config"},
	{"unknown_query_field.bad.yml", "query: yaml: unmarshal errors:\n  line 3: field lookback not found in type config.plain"},
	{"ingest_unknown_field.bad.yml", "ingest: yaml: unmarshal errors:\n  line 2: field max_body_size not found in type config.plain"},
	{"basic_auth_inline_password.bad.yml", "cluster \"us-2\": yaml: unmarshal errors:\n  line 6: field password not found in type config.BasicAuthConfig"},
	{"not_yaml.bad.yml", "yaml: line 1: did not find expected node content"},
	{"clusters_not_a_list.bad.yml", "yaml: unmarshal errors:\n  line 2: cannot unmarshal !!map into []*config.ClusterConfig"},

	// Cluster names.
	{"cluster_name_missing.bad.yml", "cluster: name: must not be empty"},
	{"cluster_name_invalid.bad.yml", "cluster \"eu west 1\": name: must be 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"},
	{"cluster_name_leading_dash.bad.yml", "cluster \"-eu-1\": name: must be 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"},
	{"cluster_name_too_long.bad.yml", "cluster \"" + strings.Repeat("a", 65) + "\": name: must be 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"},
	{"cluster_name_duplicate.bad.yml", "cluster \"eu-1\": name: defined more than once"},
	{"cluster_empty_entry.bad.yml", "clusters[0]: empty entry"},

	// How the cluster's metrics come in.
	{"cluster_no_ingest_mode.bad.yml", "cluster \"eu-1\": one of remote_write or federate must be set"},
	{"cluster_both_ingest_modes.bad.yml", "cluster \"eu-1\": remote_write and federate are mutually exclusive"},

	// Labels and cost.
	{"label_invalid_name.bad.yml", "cluster \"eu-1\": labels: \"cloud-provider\" is not a valid label name"},
	{"label_cluster_reserved.bad.yml", "cluster \"eu-1\": labels: \"cluster\" is reserved; the cluster's name is its \"cluster\" label"},
	{"cost_negative.bad.yml", "cluster \"eu-1\": cost_per_cpu_hour: must be a finite number >= 0, got -0.5"},
	{"cost_nan.bad.yml", "cluster \"eu-1\": cost_per_cpu_hour: must be a finite number >= 0, got NaN"},
	{"cost_not_a_number.bad.yml", "cluster \"eu-1\": yaml: unmarshal errors:\n  line 3: cannot unmarshal !!str `cheap` into float64"},

	// Remote-write credentials.
	{"remote_write_no_credentials.bad.yml", "cluster \"eu-1\": remote_write: one of bearer_token_file or basic_auth must be set"},
	{"remote_write_both_credentials.bad.yml", "cluster \"eu-1\": remote_write: bearer_token_file and basic_auth are mutually exclusive"},
	{"token_file_missing.bad.yml", "cluster \"eu-1\": remote_write.bearer_token_file: open testdata/secrets/missing.token: no such file or directory"},
	{"token_file_empty.bad.yml", "cluster \"eu-1\": remote_write.bearer_token_file: testdata/secrets/empty.token is empty"},
	{"token_shared.bad.yml", "cluster \"eu-2\": remote_write: uses the same credentials as cluster \"eu-1\"; each cluster needs its own, or one could write as the other"},
	{"basic_auth_username_shared.bad.yml", "cluster \"us-3\": remote_write: uses the same credentials as cluster \"us-2\"; each cluster needs its own, or one could write as the other"},
	{"basic_auth_no_password_file.bad.yml", "cluster \"us-2\": remote_write.basic_auth.password_file: must not be empty"},
	{"basic_auth_no_username.bad.yml", "cluster \"us-2\": remote_write.basic_auth.username: must not be empty"},
	{"basic_auth_username_colon.bad.yml", "cluster \"us-2\": remote_write.basic_auth.username: must not contain ':', got \"us:2\""},
	{"basic_auth_password_file_missing.bad.yml", "cluster \"us-2\": remote_write.basic_auth.password_file: open testdata/secrets/missing.password: no such file or directory"},

	// Federation.
	{"federate_no_url.bad.yml", "cluster \"eu-3\": federate.url: must not be empty"},
	{"federate_url_bad_scheme.bad.yml", "cluster \"eu-3\": federate.url: scheme must be http or https, got \"ftp\""},
	{"federate_url_no_host.bad.yml", "cluster \"eu-3\": federate.url: host must not be empty"},
	{"federate_url_unparsable.bad.yml", "cluster \"eu-3\": federate.url: parse \"http://[::1/federate\": missing ']' in host"},
	{"federate_no_match.bad.yml", "cluster \"eu-3\": federate.match: at least one selector is required; /federate returns nothing without match[]"},
	{"federate_bad_match.bad.yml", "cluster \"eu-3\": federate.match[0]: \"up{job=\" is not a valid series selector: 1:8: parse error: unexpected end of input inside braces"},
	{"federate_timeout_over_interval.bad.yml", "cluster \"eu-3\": federate.timeout: 20s is longer than interval 15s"},
	{"federate_zero_interval_timeout_over_default.bad.yml", "cluster \"eu-3\": federate.timeout: 1m is longer than interval 30s"},
	{"federate_bad_duration.bad.yml", "cluster \"eu-3\": unknown unit \" seconds\" in duration \"30 seconds\""},
	{"federate_negative_duration.bad.yml", "cluster \"eu-3\": not a valid duration string: \"-10s\""},
	{"federate_http_client_invalid.bad.yml", "cluster \"eu-3\": federate.http client: at most one of basic_auth password, password_file & password_ref must be configured"},
	{"federate_tls_invalid.bad.yml", "cluster \"eu-3\": exactly one of key or key_file must be configured when a client certificate is configured"},

	// The kubeconfig fleetwatch reaches a cluster's API server with: read and checked at load,
	// as kubectl would use it (the files it names relative to it).
	{"kubeconfig_missing.bad.yml", "cluster \"eu-2\": kubeconfig_file: open testdata/kubeconfig/missing.kubeconfig: no such file or directory"},
	{"kubeconfig_not_a_kubeconfig.bad.yml", "cluster \"eu-2\": kubeconfig_file: testdata/kubeconfig/not_a_kubeconfig.kubeconfig: json: cannot unmarshal string into Go struct field Config.clusters of type v1.NamedCluster"},
	{"kubeconfig_no_context.bad.yml", "cluster \"eu-2\": kubeconfig_file: testdata/kubeconfig/no_context.kubeconfig: current-context is not set"},
	{"kubeconfig_unknown_context.bad.yml", "cluster \"eu-2\": kubeconfig_file: testdata/kubeconfig/unknown_context.kubeconfig: invalid configuration: [context was not found for specified context: admin@eu-1, cluster has no server defined]"},
	{"kubeconfig_no_server.bad.yml", "cluster \"eu-2\": kubeconfig_file: testdata/kubeconfig/no_server.kubeconfig: invalid configuration: no server found for cluster \"eu-1\""},
	{"kubeconfig_bad_server_url.bad.yml", "cluster \"eu-2\": kubeconfig_file: testdata/kubeconfig/bad_server_url.kubeconfig: server: host must be a URL or a host:port pair: \"https://[::1:6443\""},
	{"kubeconfig_ca_missing.bad.yml", "cluster \"eu-2\": kubeconfig_file: testdata/kubeconfig/ca_missing.kubeconfig: invalid configuration: unable to read certificate-authority testdata/secrets/missing-ca.pem for eu-1 due to open testdata/secrets/missing-ca.pem: no such file or directory"},
	{"kubeconfig_ca_invalid.bad.yml", "cluster \"eu-2\": kubeconfig_file: testdata/kubeconfig/ca_invalid.kubeconfig: unable to load root certificates: unable to parse bytes as PEM block"},
	{"kubeconfig_token_file_missing.bad.yml", "cluster \"eu-2\": kubeconfig_file: testdata/kubeconfig/token_file_missing.kubeconfig: open testdata/secrets/missing.token: no such file or directory"},

	// The API server probe.
	{"api_probe_timeout_over_interval.bad.yml", "api_probe.timeout: 10s is longer than interval 5s"},
	{"api_probe_interval_zero.bad.yml", "api_probe.interval: must be > 0, got 0s"},
	{"api_probe_timeout_zero.bad.yml", "api_probe.timeout: must be > 0, got 0s"},
	{"api_probe_bad_duration.bad.yml", "api_probe: unknown unit \" seconds\" in duration \"15 seconds\""},
	{"api_probe_unknown_field.bad.yml", "api_probe: yaml: unmarshal errors:\n  line 2: field every not found in type config.plain"},

	// Ingest limits.
	{"ingest_max_body_zero.bad.yml", "ingest: max_body_bytes: must be > 0, got 0"},
	{"ingest_max_body_negative.bad.yml", "ingest: max_body_bytes: must be > 0, got -1"},
	{"ingest_inflight_below_body.bad.yml", "ingest: max_inflight_bytes: 1024 is smaller than max_body_bytes 1048576, so a full-sized request could never be accepted"},
	{"ingest_forward_bad_url.bad.yml", `ingest: forward: url: scheme must be http or https, got "receive"`},
	{"ingest_forward_negative_timeout.bad.yml", `ingest: not a valid duration string: "-5s"`},
	{"ingest_forward_http_client_invalid.bad.yml", "ingest: forward: http client: at most one of bearer_token & bearer_token_file must be configured"},

	// The global view.
	{"query_bad_engine.bad.yml", "query: engine: must be \"thanos\" or \"prometheus\", got \"mimir\""},
	{"query_lookback_zero.bad.yml", "query: lookback_delta: must be > 0, got 0s"},
	{"query_bad_duration.bad.yml", "query: unknown unit \" minutes\" in duration \"2 minutes\""},
	{"query_max_samples_negative.bad.yml", "query: max_samples: must be > 0, got -1"},
	{"query_replica_label_invalid.bad.yml", "query: replica_labels: \"prometheus-replica\" is not a valid label name"},
	{"query_replica_label_cluster.bad.yml", "query: replica_labels: \"cluster\" cannot be a replica label"},
	{"result_cache_negative_size.bad.yml", "query: result_cache.max_size_bytes: must be >= 0, got -1"},
	{"result_cache_zero_split.bad.yml", "query: result_cache.split_interval: must be > 0, got 0s"},
	{"store_no_name.bad.yml", "query: stores[0]: name: must not be empty"},
	{"store_empty_entry.bad.yml", "query: stores[0]: empty entry"},
	{"store_address_no_port.bad.yml", "query: stores[0] \"thanos-store\": address: must be host:port, got \"thanos-store\""},
	{"store_address_empty_port.bad.yml", "query: stores[0] \"thanos-store\": address: must be host:port, got \"thanos-store:\""},
	{"store_address_missing.bad.yml", "query: stores[0] \"thanos-store\": address: must be host:port, got \"\""},
	{"store_duplicate_name.bad.yml", "query: stores[1] \"longterm\": name: duplicate remote source name"},
	{"store_tls_invalid.bad.yml", "query: exactly one of cert or cert_file must be configured when a client key is configured"},
	{"remote_read_bad_url.bad.yml", "query: remote_read[0] \"longterm\": url: scheme must be http or https, got \"longterm\""},
	{"remote_read_no_url.bad.yml", "query: remote_read[0] \"longterm\": url: must not be empty"},
	{"remote_read_no_name.bad.yml", "query: remote_read[0]: name: must not be empty"},
	{"remote_read_name_clashes_with_store.bad.yml", "query: remote_read[0] \"longterm\": name: duplicate remote source name"},
	{"remote_read_http_client_invalid.bad.yml", "query: remote_read[0] \"longterm\": http client: at most one of bearer_token & bearer_token_file must be configured"},

	// Access.
	{"access_unknown_role.bad.yml", "access.identities: \"alice\": roles: \"write\" is not one of read, operate, admin"},
	{"access_no_roles.bad.yml", "access.identities: \"alice\": roles: at least one of read, operate, admin"},
	{"access_no_name.bad.yml", "access.identities: name: must not be empty"},
	{"access_duplicate.bad.yml", "access.identities: \"alice\": name: defined more than once"},
	{"access_unknown_cluster.bad.yml", "access.identities: \"team-a\": clusters: \"eu-9\" is not a configured cluster"},
	{"access_anonymous_operate.bad.yml", "access.anonymous_roles: \"operate\": only \"read\" may be given to requests without credentials"},
	{"alertmanager_http_client_invalid.bad.yml", "rules: alertmanager https://am.example:9093: http client: at most one of basic_auth password, password_file & password_ref must be configured"},
	{"access_token_shared.bad.yml", "access.identities: \"grafana\": bearer_token_file: the same token as cluster eu-1; each identity needs its own"},
	{"hooks_bad_url.bad.yml", `hooks.receivers[0] ("pager"): url: "/relative" is not an absolute http or https URL`},
	{"hooks_missing_secret.bad.yml", `hooks.receivers[0] ("pager"): secret_files[0]: open testdata/secrets/missing: no such file or directory`},
	{"hooks_duplicate.bad.yml", `hooks.receivers[1] ("pager"): name: defined more than once`},
	{"hooks_backoff.bad.yml", `hooks.receivers[0] ("pager"): min_backoff and max_backoff: need 0 < min_backoff <= max_backoff`},
}

func TestBadConfigs(t *testing.T) {
	for _, tc := range badConfigs {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join("testdata", tc.file)
			_, err := LoadFile(path)
			require.EqualError(t, err, "load config "+path+": "+tc.err)
		})
	}
}

// TestEveryBadConfigIsTested keeps testdata and the table in step: a bad file nobody checks
// proves nothing.
func TestEveryBadConfigIsTested(t *testing.T) {
	files, err := filepath.Glob("testdata/*.bad.yml")
	require.NoError(t, err)
	var tested []string
	for _, tc := range badConfigs {
		tested = append(tested, tc.file)
	}
	for _, f := range files {
		require.Contains(t, tested, filepath.Base(f))
	}
	require.Len(t, tested, len(files), "a file in the table is missing from testdata")
}

// checkInvariants asserts what every config that loads must satisfy, whatever its YAML said.
func checkInvariants(t *testing.T, cfg *Config) {
	t.Helper()
	names := map[string]bool{}
	for _, c := range cfg.Clusters {
		require.NotNil(t, c)
		require.Regexp(t, clusterNameRE, c.Name)
		require.False(t, names[c.Name], "cluster %q defined twice", c.Name)
		names[c.Name] = true
		require.True(t, (c.RemoteWrite == nil) != (c.Federate == nil), "cluster %q needs exactly one ingest mode", c.Name)
		require.NotContains(t, c.Labels, ClusterLabel)
		require.GreaterOrEqual(t, c.CostPerCPUHour, 0.0)
		if rw := c.RemoteWrite; rw != nil {
			if rw.BasicAuth != nil {
				require.Empty(t, rw.BearerToken)
				require.NotEmpty(t, rw.BasicAuth.Username)
				require.NotEmpty(t, rw.BasicAuth.Password)
			} else {
				require.NotEmpty(t, rw.BearerToken)
			}
		}
		if f := c.Federate; f != nil {
			require.NotEmpty(t, f.Match)
			require.Positive(t, f.Timeout)
			require.LessOrEqual(t, f.Timeout, f.Interval)
		}
		if c.KubeconfigFile != "" {
			require.NotNil(t, c.KubeConfig, "cluster %q: kubeconfig_file not read", c.Name)
			require.NotEmpty(t, c.KubeConfig.Host)
		} else {
			require.Nil(t, c.KubeConfig, "cluster %q: a client configuration without kubeconfig_file", c.Name)
		}
	}
	require.Positive(t, cfg.APIProbe.Timeout)
	require.LessOrEqual(t, cfg.APIProbe.Timeout, cfg.APIProbe.Interval)
	require.Positive(t, cfg.Ingest.MaxBodyBytes)
	require.GreaterOrEqual(t, cfg.Ingest.MaxInflightBytes, cfg.Ingest.MaxBodyBytes)
	q := cfg.Query
	require.Contains(t, []string{EngineThanos, EnginePrometheus}, q.Engine)
	require.Positive(t, q.LookbackDelta)
	require.Positive(t, q.Timeout)
	require.Positive(t, q.MaxSamples)
	require.GreaterOrEqual(t, q.ResultCache.MaxSizeBytes, int64(0))
	for _, s := range q.Stores {
		require.Positive(t, s.Timeout)
	}
	for _, r := range q.RemoteRead {
		require.Positive(t, r.Timeout)
	}
}

// FuzzLoad feeds Load arbitrary YAML. Load must never panic; a config it accepts must satisfy
// the invariants, and dumping it and loading the dump must give the same config (secrets read
// from files are not dumped, and inline secrets come back as "<secret>", so the dump of the
// dump is compared, not the structs).
func FuzzLoad(f *testing.F) {
	files, err := filepath.Glob("testdata/*.yml")
	require.NoError(f, err)
	for _, name := range append(files, "../../examples/fleetwatch.yml") {
		b, err := os.ReadFile(name)
		require.NoError(f, err)
		f.Add(b)
	}
	// Secrets are resolved against an absolute directory, so a dumped config (whose paths are
	// already resolved) loads from the same place.
	dir, err := filepath.Abs("testdata")
	require.NoError(f, err)

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Load(data, dir)
		if err != nil {
			require.Nil(t, cfg)
			return
		}
		checkInvariants(t, cfg)

		out, err := yaml.Marshal(cfg)
		require.NoError(t, err)
		again, err := Load(out, dir)
		require.NoError(t, err, "the dump of an accepted config must load:\n%s", out)
		checkInvariants(t, again)
		out2, err := yaml.Marshal(again)
		require.NoError(t, err)
		require.Equal(t, string(out), string(out2))
		require.Equal(t, clusterNames(cfg), clusterNames(again))
	})
}

func clusterNames(cfg *Config) []string {
	var names []string
	for _, c := range cfg.Clusters {
		names = append(names, c.Name)
	}
	return slices.Clip(names)
}

func TestRulesSection(t *testing.T) {
	cfg, err := Load([]byte("rules:\n  evaluation_interval: 30s\n  rule_files: ['rules/*.yml']\n  alertmanagers: ['http://am:9093']\n"), "/etc/fleetwatch")
	require.NoError(t, err)
	require.Equal(t, RulesConfig{
		EvaluationInterval: model.Duration(30 * time.Second),
		RuleFiles:          []string{"/etc/fleetwatch/rules/*.yml"},
		Alertmanagers:      []*AlertmanagerConfig{{URL: "http://am:9093", HTTPClientConfig: config.DefaultHTTPClientConfig}},
		Pack:               DefaultPack,
	}, cfg.Rules)
	for in, want := range map[string]string{
		"rules: {evaluation_interval: 0s}":           "rules.evaluation_interval: must be positive, got 0s",
		"rules: {alertmanagers: ['am:9093']}":        "rules.alertmanagers[0]: ",
		"rules: {rule_files: ['[']}":                 `rules.rule_files[0]: invalid glob "["`,
		"rules: {evaluation_interval: 1m, bogus: 1}": "field bogus not found",
	} {
		_, err := Load([]byte(in), ".")
		require.ErrorContains(t, err, want, in)
	}
}

func TestRulesPackSection(t *testing.T) {
	cfg, err := Load([]byte("rules:\n  pack:\n    node_ready_ratio: 0.8\n    saturation_for: 10m\n"), ".")
	require.NoError(t, err)
	want := DefaultPack
	want.Thresholds.NodeReadyRatio = 0.8
	want.Thresholds.SaturationFor = model.Duration(10 * time.Minute)
	require.Equal(t, want, cfg.Rules.Pack)

	for in, want := range map[string]PackConfig{
		"clusters: []":                               DefaultPack,
		"rules:":                                     DefaultPack,
		"rules: {evaluation_interval: 30s}":          DefaultPack,
		"rules:\n  pack:\n":                          DefaultPack,
		"rules:\n  pack: {enabled: false}\n":         {Enabled: false, Thresholds: DefaultPack.Thresholds},
		"rules:\n  pack: {crash_loop_per_minute: 5}": {Enabled: true, Thresholds: func() Thresholds { t := DefaultPack.Thresholds; t.CrashLoopPerMinute = 5; return t }()},
	} {
		cfg, err := Load([]byte(in), ".")
		require.NoError(t, err, in)
		require.Equal(t, want, cfg.Rules.Pack, in)
	}
	for in, want := range map[string]string{
		"rules: {pack: {node_ready_ratio: 1.5}}": "rules.pack.node_ready_ratio: must be in (0, 1], got 1.5",
		"rules: {pack: {saturation_ratio: 0}}":   "rules.pack.saturation_ratio: must be in (0, 1], got 0",
		"rules: {pack: {silent_after: -1m}}":     `rules.pack.silent_after: "-1m" is not a duration`,
		"rules: {pack: {drift_for: soon}}":       `rules.pack.drift_for: "soon" is not a duration (e.g. 90s, 5m, 1h)`,
		"rules: {pack: {node_ready_ratoi: 0.8}}": "field node_ready_ratoi not found",
	} {
		_, err := Load([]byte(in), ".")
		require.ErrorContains(t, err, want, in)
	}
}

func TestCorrelateSection(t *testing.T) {
	cfg, err := Load([]byte("correlate:\n  resolve_after: 10m\n  alertmanagers: ['http://am:9093']\n  teams: {payments: team-payments}\n  alerts: {nodes_root: [NodeDown]}\n"), ".")
	require.NoError(t, err)
	want := DefaultCorrelate
	want.Alerts.NodesRoot = []string{"NodeDown"}
	want.ResolveAfter = model.Duration(10 * time.Minute)
	want.Alertmanagers = []*AlertmanagerConfig{{URL: "http://am:9093", HTTPClientConfig: config.DefaultHTTPClientConfig}}
	want.Teams = map[string]string{"payments": "team-payments"}
	require.Equal(t, want, cfg.Correlate)
	for _, in := range []string{"clusters: []", "correlate:"} {
		cfg, err := Load([]byte(in), ".")
		require.NoError(t, err)
		require.Equal(t, DefaultCorrelate, cfg.Correlate, in)
	}
	for in, want := range map[string]string{
		"correlate: {resolve_after: 0s}":          "correlate.resolve_after: must be positive, got 0s",
		"correlate: {rollout_clusters: 1}":        "correlate.rollout_clusters: must be at least 2, got 1",
		"correlate: {alertmanagers: ['am:9093']}": "correlate.alertmanagers[0]: ",
		"correlate: {teams: {payments: ''}}":      `correlate.teams: "payments": "": namespace and team must not be empty`,
		"correlate: {bogus: 1}":                   "field bogus not found",
	} {
		_, err := Load([]byte(in), ".")
		require.ErrorContains(t, err, want, in)
	}
}

func TestScheduleSection(t *testing.T) {
	cfg, err := Load([]byte("schedule:\n  headroom: 0.2\n  weights: {cost: 3}\n  compliance_tags: [pci]\n  ocm: {kubeconfig: hub.kubeconfig}\n"), "/etc/fleetwatch")
	require.NoError(t, err)
	want := DefaultSchedule
	want.Headroom = 0.2
	want.Weights.Cost = 3 // the other weights keep their defaults
	want.ComplianceTags = []string{"pci"}
	want.OCM = &OCMConfig{Kubeconfig: "/etc/fleetwatch/hub.kubeconfig", Name: "fleetwatch"}
	require.Equal(t, want, cfg.Schedule)
	for _, in := range []string{"clusters: []", "schedule:"} {
		cfg, err := Load([]byte(in), ".")
		require.NoError(t, err)
		require.Equal(t, DefaultSchedule, cfg.Schedule, in)
	}
	cfg, err = Load([]byte("clusters:\n  - name: eu-1\n    compliance: [pci, gdpr]\n    latency: {eu-users: 12ms, us-users: 95ms}\n    remote_write: {bearer_token_file: testdata/secrets/eu-1.token}\n"), ".")
	require.NoError(t, err)
	require.Equal(t, []string{"pci", "gdpr"}, cfg.Clusters[0].Compliance)
	require.Equal(t, map[string]model.Duration{"eu-users": model.Duration(12 * time.Millisecond), "us-users": model.Duration(95 * time.Millisecond)}, cfg.Clusters[0].Latency)
	for in, want := range map[string]string{
		"schedule: {headroom: 1}":          "schedule.headroom: must be in [0, 1), got 1",
		"schedule: {headroom: -0.1}":       "schedule.headroom: must be in [0, 1), got -0.1",
		"schedule: {refresh_interval: 0s}": "schedule.refresh_interval: must be positive, got 0s",
		"schedule: {weights: {cost: -1}}":  "schedule.weights.cost: must be a finite number >= 0, got -1",
		"schedule: {weights: {free_capacity: 0, cost: 0, latency: 0, saturation: 0, spread: 0}}": "schedule.weights: at least one must be > 0",
		"schedule: {compliance_tags: ['']}": "schedule.compliance_tags[0]: must not be empty",
		"schedule: {bogus: 1}":              "field bogus not found",
		"clusters:\n  - name: eu-1\n    latency: {eu-users: -5ms}\n    remote_write: {bearer_token_file: x}\n": `cluster "eu-1": not a valid duration string: "-5ms"`,
		"clusters:\n  - name: eu-1\n    compliance: ['']\n    remote_write: {bearer_token_file: x}\n":          `cluster "eu-1": compliance[0]: must not be empty`,
	} {
		_, err := Load([]byte(in), ".")
		require.ErrorContains(t, err, want, in)
	}
}

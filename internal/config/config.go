package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v2"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// ClusterLabel is the label fleetwatch stamps on every series with the name of the cluster that
// sent it. A cluster cannot set it to another cluster's name.
const ClusterLabel = "cluster"

// Default values, also documented in the example configuration.
var (
	DefaultFederateInterval = model.Duration(30 * time.Second)
	DefaultFederateTimeout  = model.Duration(10 * time.Second)

	DefaultIngest = IngestConfig{
		MaxBodyBytes:     16 << 20,
		MaxInflightBytes: 256 << 20,
	}

	DefaultQuery = QueryConfig{
		Engine:        EngineThanos,
		LookbackDelta: model.Duration(5 * time.Minute),
		Timeout:       model.Duration(2 * time.Minute),
		MaxSamples:    50_000_000,
		ResultCache: ResultCacheConfig{
			MaxSizeBytes:  256 << 20,
			Freshness:     model.Duration(5 * time.Minute),
			SplitInterval: model.Duration(time.Hour),
		},
	}

	DefaultRemoteSourceTimeout = model.Duration(30 * time.Second)

	DefaultAPIProbe = APIProbeConfig{
		Interval: model.Duration(15 * time.Second),
		Timeout:  model.Duration(5 * time.Second),
	}
)

// Query engines.
const (
	EngineThanos     = "thanos"
	EnginePrometheus = "prometheus"
)

// Config is the root of fleetwatch.yml.
type Config struct {
	Clusters []*ClusterConfig `yaml:"clusters"`
	Ingest   IngestConfig     `yaml:"ingest,omitempty"`
	// APIProbe says how fleetwatch probes the API server of every cluster with a
	// kubeconfig_file.
	APIProbe APIProbeConfig `yaml:"api_probe,omitempty"`
	Query    QueryConfig    `yaml:"query,omitempty"`
	Rules    RulesConfig    `yaml:"rules,omitempty"`
	// Correlate configures the correlation of alerts into incidents.
	Correlate CorrelateConfig `yaml:"correlate,omitempty"`
	// Schedule configures cross-cluster placement and what-if capacity.
	Schedule ScheduleConfig `yaml:"schedule,omitempty"`
	// Access says which identities may read, operate and administer fleetwatch.
	Access AccessConfig `yaml:"access,omitempty"`
	// Remediation says what fleetwatch may do about incidents, and the guards around it.
	Remediation RemediationConfig `yaml:"remediation,omitempty"`
	// Hooks are the signed outbound webhooks for incident and remediation events.
	Hooks HooksConfig `yaml:"hooks,omitempty"`
}

// DefaultSchedule are the placement defaults (schedule/README.md).
var DefaultSchedule = ScheduleConfig{
	Enabled:         true,
	RefreshInterval: model.Duration(15 * time.Second),
	Headroom:        0.15,
	Weights:         DefaultWeights,
}

// ValidateClusterName says what is wrong with a cluster's name, if anything.
func ValidateClusterName(name string) error {
	if name == "" {
		return errors.New("cluster: name: must not be empty")
	}
	if !clusterNameRE.MatchString(name) {
		return fmt.Errorf("cluster %q: name: must be 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit", name)
	}
	return nil
}

// MetricLastReloadSuccessful is 1 when fleetwatch's last configuration (re)load succeeded.
const MetricLastReloadSuccessful = "fleetwatch_config_last_reload_successful"

// Weights weigh the scores of a placement; each is >= 0 and at least one is > 0. They are
// schedule.weights in fleetwatch.yml and "weights" in a placement or what-if request, where
// each may be overridden; omitted ones keep the configured value.
type Weights struct {
	// FreeCapacity favours clusters that fit the most replicas.
	FreeCapacity float64 `yaml:"free_capacity" json:"free_capacity"`
	// Cost favours clusters with the lowest cost per CPU-hour.
	Cost float64 `yaml:"cost" json:"cost"`
	// Latency favours clusters closest to the workload's user regions.
	Latency float64 `yaml:"latency" json:"latency"`
	// Saturation favours clusters whose requests are furthest below the ceiling.
	Saturation float64 `yaml:"saturation" json:"saturation"`
	// Spread favours a region no cluster picked before it is in (anti-affinity across regions).
	Spread float64 `yaml:"spread" json:"spread"`
}

// DefaultWeights weigh every score the same.
var DefaultWeights = Weights{FreeCapacity: 1, Cost: 1, Latency: 1, Saturation: 1, Spread: 1}

// Validate says which weight is wrong.
func (w Weights) Validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"free_capacity", w.FreeCapacity}, {"cost", w.Cost}, {"latency", w.Latency}, {"saturation", w.Saturation}, {"spread", w.Spread}} {
		if f.v < 0 || math.IsNaN(f.v) || math.IsInf(f.v, 0) {
			return fmt.Errorf("weights.%s: must be a finite number >= 0, got %v", f.name, f.v)
		}
	}
	if w.Sum() == 0 {
		return fmt.Errorf("weights: at least one must be > 0")
	}
	return nil
}

// Sum is the sum of the weights, what each score's weight is a share of.
func (w Weights) Sum() float64 {
	return w.FreeCapacity + w.Cost + w.Latency + w.Saturation + w.Spread
}

// ScheduleConfig configures placement: the snapshot of the fleet it decides on, the ceiling it
// never pushes a cluster past and how it weighs clusters.
type ScheduleConfig struct {
	Enabled bool `yaml:"enabled"`
	// RefreshInterval: the snapshot and the exported scores are rebuilt this often.
	RefreshInterval model.Duration `yaml:"refresh_interval,omitempty"`
	// Headroom is the share of a cluster's allocatable CPU and memory never placed on. The
	// ceiling is min(1 - headroom, rules.pack.saturation_ratio), so a placement never makes the
	// saturation alerts fire.
	Headroom float64 `yaml:"headroom"`
	// StaleAfter: a cluster without new data for longer is never a placement target; 0 (the
	// default) takes rules.pack.silent_after.
	StaleAfter model.Duration `yaml:"stale_after,omitempty"`
	// Weights are the default score weights; a request may override each.
	Weights Weights `yaml:"weights,omitempty"`
	// ComplianceTags declares tags a request may ask for even if no cluster has them yet.
	ComplianceTags []string `yaml:"compliance_tags,omitempty"`
	// OCM, when set, writes each cluster's score as an Open Cluster Management
	// AddOnPlacementScore on the hub the kubeconfig points at.
	OCM *OCMConfig `yaml:"ocm,omitempty"`
}

// OCMConfig says where AddOnPlacementScore objects are written.
type OCMConfig struct {
	// Kubeconfig of the OCM hub (relative to the config file); empty: in-cluster config.
	Kubeconfig string `yaml:"kubeconfig,omitempty"`
	// Name of the AddOnPlacementScore objects, one in each managed cluster's namespace.
	Name string `yaml:"name,omitempty"`
}

// UnmarshalYAML sets the defaults and validates.
func (c *ScheduleConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultSchedule
	type plain ScheduleConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return fmt.Errorf("schedule: %w", err)
	}
	if err := c.Validate(); err != nil {
		return err
	}
	if c.OCM != nil && c.OCM.Name == "" {
		c.OCM.Name = "fleetwatch"
	}
	return nil
}

// Validate reports the first out-of-range field, named by its key in fleetwatch.yml. Placement
// checks the settings it is given with it too.
func (c ScheduleConfig) Validate() error {
	if c.RefreshInterval <= 0 {
		return fmt.Errorf("schedule.refresh_interval: must be positive, got %s", c.RefreshInterval)
	}
	if c.StaleAfter < 0 {
		return fmt.Errorf("schedule.stale_after: must be >= 0, got %s", c.StaleAfter)
	}
	if c.Headroom < 0 || c.Headroom >= 1 || math.IsNaN(c.Headroom) {
		return fmt.Errorf("schedule.headroom: must be in [0, 1), got %v", c.Headroom)
	}
	if err := c.Weights.Validate(); err != nil {
		return fmt.Errorf("schedule.%w", err)
	}
	for i, t := range c.ComplianceTags {
		if t == "" {
			return fmt.Errorf("schedule.compliance_tags[%d]: must not be empty", i)
		}
	}
	return nil
}

// DefaultCorrelate are the correlation defaults (correlate/README.md).
var DefaultCorrelate = CorrelateConfig{
	Enabled:            true,
	EvaluationInterval: model.Duration(5 * time.Second),
	ResolveAfter:       model.Duration(5 * time.Minute),
	ResendInterval:     model.Duration(time.Minute),
	RolloutClusters:    2,
	RolloutWindow:      model.Duration(15 * time.Minute),
	ResolvedRetention:  model.Duration(720 * time.Hour),
	ResolveTimeout:     model.Duration(5 * time.Minute),
	// Alertmanager's default repeat_interval (4h) plus its group_interval (5m) and room for
	// the forwarding Alertmanager's retries.
	WebhookResolveTimeout: model.Duration(5 * time.Hour),
}

// CorrelateConfig configures the correlation stage: alerts from fleetwatch's rules and from
// member clusters become incidents, which go to Alertmanagers.
type CorrelateConfig struct {
	Enabled bool `yaml:"enabled"`
	// EvaluationInterval: incidents are recomputed at least this often.
	EvaluationInterval model.Duration `yaml:"evaluation_interval,omitempty"`
	// ResolveAfter: an incident resolves once its alerts stayed away this long (hysteresis).
	ResolveAfter model.Duration `yaml:"resolve_after,omitempty"`
	// ResendInterval: active incidents are sent to Alertmanager again this often.
	ResendInterval model.Duration `yaml:"resend_interval,omitempty"`
	// Alertmanagers incidents are posted to (Alertmanager API v2): URLs, or a url with
	// Prometheus's HTTP client settings.
	Alertmanagers []*AlertmanagerConfig `yaml:"alertmanagers,omitempty"`
	// RolloutClusters and RolloutWindow: a workload failing in this many clusters, the first
	// failures at most the window apart, is one fleet-wide "likely bad rollout" incident.
	RolloutClusters int            `yaml:"rollout_clusters,omitempty"`
	RolloutWindow   model.Duration `yaml:"rollout_window,omitempty"`
	// Teams maps namespaces to the team that owns them (the incident's `team` label).
	Teams map[string]string `yaml:"teams,omitempty"`
	// Alerts, when set, replaces the alert names the built-in correlation rules give a role
	// (correlate/README.md lists the roles and their default names).
	Alerts CorrelateAlerts `yaml:"alerts,omitempty"`
	// ResolvedRetention: resolved incidents are deleted from the store this long after they
	// resolved.
	ResolvedRetention model.Duration `yaml:"resolved_retention,omitempty"`
	// ResolveTimeout is Alertmanager's resolve_timeout for alerts posted to /api/v2/alerts
	// without endsAt (or with one more than a day ahead): they end this long after they were
	// last posted, unless posted again.
	ResolveTimeout model.Duration `yaml:"resolve_timeout,omitempty"`
	// WebhookResolveTimeout: a firing alert forwarded by a member cluster's Alertmanager
	// webhook ends this long after the last notification that listed it. Alertmanager
	// notifies a firing group again only every repeat_interval, so this must exceed the
	// forwarding route's repeat_interval plus its group_interval.
	WebhookResolveTimeout model.Duration `yaml:"webhook_resolve_timeout,omitempty"`
}

// CorrelateAlerts name the alerts of each correlation role; an empty list keeps the default.
type CorrelateAlerts struct {
	ClusterRoot     []string `yaml:"cluster_root,omitempty"`
	NodesRoot       []string `yaml:"nodes_root,omitempty"`
	Saturation      []string `yaml:"saturation,omitempty"`
	Pending         []string `yaml:"pending,omitempty"`
	WorkloadFailure []string `yaml:"workload_failure,omitempty"`
	ClusterFailure  []string `yaml:"cluster_failure,omitempty"`
}

// UnmarshalYAML sets the defaults and validates.
func (c *CorrelateConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultCorrelate
	type plain CorrelateConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return fmt.Errorf("correlate: %w", err)
	}
	for name, d := range map[string]model.Duration{
		"evaluation_interval": c.EvaluationInterval, "resolve_after": c.ResolveAfter,
		"resend_interval": c.ResendInterval, "rollout_window": c.RolloutWindow,
		"resolved_retention": c.ResolvedRetention, "resolve_timeout": c.ResolveTimeout,
		"webhook_resolve_timeout": c.WebhookResolveTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("correlate.%s: must be positive, got %s", name, d)
		}
	}
	if c.RolloutClusters < 2 {
		return fmt.Errorf("correlate.rollout_clusters: must be at least 2, got %d", c.RolloutClusters)
	}
	for i, a := range c.Alertmanagers {
		if a == nil {
			return fmt.Errorf("correlate.alertmanagers[%d]: empty entry", i)
		}
		if err := validateURL(a.URL); err != nil {
			return fmt.Errorf("correlate.alertmanagers[%d]: %w", i, err)
		}
	}
	for ns, team := range c.Teams {
		if ns == "" || team == "" {
			return fmt.Errorf("correlate.teams: %q: %q: namespace and team must not be empty", ns, team)
		}
	}
	return nil
}

// DefaultRules are the rule evaluation defaults.
var DefaultRules = RulesConfig{
	EvaluationInterval: model.Duration(15 * time.Second),
	Pack:               DefaultPack,
}

// DefaultPack turns the built-in rule pack on with its default thresholds.
var DefaultPack = PackConfig{Enabled: true, Thresholds: DefaultThresholds}

// PackConfig configures the built-in rule pack (rules/pack): whether it is loaded and the
// thresholds and `for` durations it alerts at. Omitted thresholds keep their defaults.
type PackConfig struct {
	Enabled bool `yaml:"enabled"`
	// Named, not embedded: an embedded Thresholds would lend PackConfig its UnmarshalYAML.
	Thresholds Thresholds `yaml:",inline"`
}

// UnmarshalYAML keeps the defaults for omitted keys and validates the thresholds.
func (c *PackConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultPack
	// model.Duration's own error does not say which key it was; check durations first.
	var raw map[string]any
	if err := unmarshal(&raw); err == nil {
		t := reflect.TypeOf(Thresholds{})
		for i := range t.NumField() {
			f := t.Field(i)
			key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			v, ok := raw[key]
			if !ok || f.Type != reflect.TypeOf(model.Duration(0)) {
				continue
			}
			if _, err := model.ParseDuration(fmt.Sprint(v)); err != nil {
				return fmt.Errorf("rules.pack.%s: %q is not a duration (e.g. 90s, 5m, 1h)", key, fmt.Sprint(v))
			}
		}
	}
	type plain PackConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return err
	}
	return c.Thresholds.Validate()
}

// RulesConfig configures rule evaluation on the view.
type RulesConfig struct {
	EvaluationInterval model.Duration `yaml:"evaluation_interval,omitempty"`
	// RuleFiles are Prometheus rule files (globs, relative to the config file).
	RuleFiles []string `yaml:"rule_files,omitempty"`
	// Alertmanagers alerts are posted to (Alertmanager API v2): URLs, or a url with
	// Prometheus's HTTP client settings.
	Alertmanagers []*AlertmanagerConfig `yaml:"alertmanagers,omitempty"`
	// Pack is the built-in rule pack.
	Pack PackConfig `yaml:"pack,omitempty"`
}

// UnmarshalYAML sets the rules defaults and validates them.
func (c *RulesConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultRules
	type plain RulesConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	// `pack:` with nothing under it decodes as null and zeroes the section; it means defaults.
	if reflect.ValueOf(c.Pack).IsZero() {
		c.Pack = DefaultPack
	}
	if c.EvaluationInterval <= 0 {
		return fmt.Errorf("rules.evaluation_interval: must be positive, got %s", c.EvaluationInterval)
	}
	for i, f := range c.RuleFiles {
		if _, err := filepath.Match(f, ""); err != nil {
			return fmt.Errorf("rules.rule_files[%d]: invalid glob %q: %w", i, f, err)
		}
	}
	for i, a := range c.Alertmanagers {
		if a == nil {
			return fmt.Errorf("rules.alertmanagers[%d]: empty entry", i)
		}
		if err := validateURL(a.URL); err != nil {
			return fmt.Errorf("rules.alertmanagers[%d]: %w", i, err)
		}
	}
	return nil
}

// Files expands the rule file globs.
func (c *RulesConfig) Files() ([]string, error) {
	var out []string
	for _, pat := range c.RuleFiles {
		m, err := filepath.Glob(pat)
		if err != nil {
			return nil, fmt.Errorf("rules.rule_files: %q: %w", pat, err)
		}
		out = append(out, m...)
	}
	return out, nil
}

// ClusterConfig describes one member cluster.
type ClusterConfig struct {
	// Name is stamped as the `cluster` label on every series the cluster sends.
	Name string `yaml:"name"`
	// Labels describe the cluster (region, provider, tier, compliance, ...) for placement and
	// routing; they are not added to its series.
	Labels map[string]string `yaml:"labels,omitempty"`
	// CostPerCPUHour is what one CPU-hour costs in this cluster, in the fleet's currency.
	CostPerCPUHour float64 `yaml:"cost_per_cpu_hour,omitempty"`
	// Compliance are the cluster's compliance tags (pci, hipaa, ...); a placement that
	// requires a tag only goes to clusters that have it.
	Compliance []string `yaml:"compliance,omitempty"`
	// Latency is the network latency from the cluster to named user regions, for placement.
	Latency map[string]model.Duration `yaml:"latency,omitempty"`

	// Exactly one of RemoteWrite and Federate is set.
	RemoteWrite *RemoteWriteConfig `yaml:"remote_write,omitempty"`
	Federate    *FederateConfig    `yaml:"federate,omitempty"`

	// KubeconfigFile is a kubeconfig (relative to the config file) whose current context
	// reaches the cluster's API server with fleetwatch's credentials. Optional: with it,
	// fleetwatch probes the API server (api_probe), so that losing its own way to the cluster
	// shows while the cluster's metrics still arrive.
	KubeconfigFile string `yaml:"kubeconfig_file,omitempty"`
	// KubeConfig is the client configuration of KubeconfigFile's current context, read by Load
	// (so a reload reads the file again); never read from YAML.
	KubeConfig *rest.Config `yaml:"-"`
}

// RemoteWriteConfig holds the credentials a cluster's Prometheus presents when it remote-writes
// into fleetwatch: a bearer token, or basic auth, each read from a file.
type RemoteWriteConfig struct {
	BearerTokenFile string           `yaml:"bearer_token_file,omitempty"`
	BasicAuth       *BasicAuthConfig `yaml:"basic_auth,omitempty"`

	// Filled by Load from the files above; never read from YAML.
	BearerToken string `yaml:"-"`
}

// BasicAuthConfig is a username and a password read from a file.
type BasicAuthConfig struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`

	Password string `yaml:"-"`
}

// FederateConfig says how fleetwatch pulls a cluster's Prometheus through /federate.
type FederateConfig struct {
	URL      string         `yaml:"url"`
	Match    []string       `yaml:"match"`
	Interval model.Duration `yaml:"interval,omitempty"`
	Timeout  model.Duration `yaml:"timeout,omitempty"`
	// HTTPClientConfig has Prometheus's client settings: TLS, basic auth, bearer token, proxy.
	HTTPClientConfig config.HTTPClientConfig `yaml:",inline"`
}

// APIProbeConfig says how often fleetwatch asks the API server of each cluster with a
// kubeconfig_file whether it is ready (GET /readyz), and how long it waits for the answer.
type APIProbeConfig struct {
	Interval model.Duration `yaml:"interval,omitempty"`
	// Timeout is at most Interval, so a cluster is never probed twice at once. Omitted, it is
	// the default capped at Interval.
	Timeout model.Duration `yaml:"timeout,omitempty"`
}

// UnmarshalYAML sets the defaults and validates.
func (c *APIProbeConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultAPIProbe
	type plain APIProbeConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return fmt.Errorf("api_probe: %w", err)
	}
	// A shorter interval alone shortens the default timeout with it, as federate's does.
	var keys map[string]any
	if err := unmarshal(&keys); err == nil {
		if _, ok := keys["timeout"]; !ok {
			c.Timeout = min(DefaultAPIProbe.Timeout, c.Interval)
		}
	}
	return c.Validate()
}

// Validate reports the first out-of-range field, named by its key in fleetwatch.yml.
func (c APIProbeConfig) Validate() error {
	if c.Interval <= 0 {
		return fmt.Errorf("api_probe.interval: must be > 0, got %s", c.Interval)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("api_probe.timeout: must be > 0, got %s", c.Timeout)
	}
	if c.Timeout > c.Interval {
		return fmt.Errorf("api_probe.timeout: %s is longer than interval %s", c.Timeout, c.Interval)
	}
	return nil
}

// IngestConfig bounds what the remote-write receiver accepts.
type IngestConfig struct {
	// MaxBodyBytes is the largest compressed request body accepted (413 above it).
	MaxBodyBytes int64 `yaml:"max_body_bytes,omitempty"`
	// MaxInflightBytes bounds the compressed bytes of all requests being handled at once; a
	// request that does not fit is answered 429 so the sender backs off and retries.
	MaxInflightBytes int64 `yaml:"max_inflight_bytes,omitempty"`
	// Forward, when set, sends every member's samples on to Thanos Receive instead of the
	// embedded TSDB (the thanos install): fleetwatch still authenticates the cluster and
	// stamps its label, and answers the member only once Receive acknowledged. Read them back
	// through Thanos Query as a query.stores entry.
	Forward *ForwardConfig `yaml:"forward,omitempty"`
}

// ForwardConfig is ingest.forward: Thanos Receive's remote-write endpoint.
type ForwardConfig struct {
	URL string `yaml:"url"`
	// TenantHeader carries the cluster's name, Receive's tenant (default THANOS-TENANT, as
	// Receive's --receive.tenant-header).
	TenantHeader string         `yaml:"tenant_header,omitempty"`
	Timeout      model.Duration `yaml:"timeout,omitempty"`
	// Any Prometheus HTTP client setting (tls_config, authorization, basic_auth...).
	HTTPClientConfig config.HTTPClientConfig `yaml:",inline"`
}

// UnmarshalYAML starts from Prometheus's HTTP client defaults (HTTP/2, redirects followed), as
// its remote_write does.
func (f *ForwardConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*f = ForwardConfig{HTTPClientConfig: config.DefaultHTTPClientConfig}
	type plain ForwardConfig
	return unmarshal((*plain)(f))
}

// DefaultTenantHeader is the header Thanos Receive reads the tenant from (its
// --receive.tenant-header default): ingest.forward.tenant_header's default.
const DefaultTenantHeader = "THANOS-TENANT"

// DefaultForwardTimeout bounds one forwarded request; a member's remote write waits for it.
const DefaultForwardTimeout = model.Duration(30 * time.Second)

// QueryConfig configures the global view.
type QueryConfig struct {
	// Engine is "thanos" (the Thanos promql-engine for range queries, with Prometheus's engine
	// for instant queries, for what it does not implement and for range queries with wide
	// windows, internal/promqlengine) or "prometheus".
	Engine        string         `yaml:"engine,omitempty"`
	LookbackDelta model.Duration `yaml:"lookback_delta,omitempty"`
	Timeout       model.Duration `yaml:"timeout,omitempty"`
	MaxSamples    int            `yaml:"max_samples,omitempty"`
	// ReplicaLabels name the labels that tell HA replicas apart; they are kept on ingest and
	// removed by deduplication at query time.
	ReplicaLabels []string          `yaml:"replica_labels,omitempty"`
	ResultCache   ResultCacheConfig `yaml:"result_cache"`
	// Stores are Thanos StoreAPI endpoints (gRPC) merged into the view.
	Stores []*StoreConfig `yaml:"stores,omitempty"`
	// RemoteRead are Prometheus remote-read endpoints merged into the view.
	RemoteRead []*RemoteReadConfig `yaml:"remote_read,omitempty"`
}

// ResultCacheConfig sizes the range-query result cache. Its fields have no omitempty: zero
// means "off" or "cache up to now", not "default", and a dump must not lose that.
type ResultCacheConfig struct {
	// MaxSizeBytes is the memory the cache may use; 0 turns the cache off.
	MaxSizeBytes int64 `yaml:"max_size_bytes"`
	// Freshness is how far back from now results are never cached, because late samples may
	// still change them.
	Freshness model.Duration `yaml:"freshness"`
	// SplitInterval is the length of the step-aligned pieces a range query is cut into and
	// cached by, as Thanos's query-frontend splits by day: a dashboard refresh computes only
	// the pieces that are not cached yet or too fresh. A piece holds at least
	// query.MinStepsPerSplit steps, so a coarse step makes longer pieces.
	SplitInterval model.Duration `yaml:"split_interval"`
}

// StoreConfig is one Thanos StoreAPI endpoint.
type StoreConfig struct {
	Name    string         `yaml:"name"`
	Address string         `yaml:"address"`
	Timeout model.Duration `yaml:"timeout,omitempty"`
	// TLS is optional; without it the connection is plaintext.
	TLS *config.TLSConfig `yaml:"tls_config,omitempty"`
}

// RemoteReadConfig is one Prometheus remote-read endpoint.
type RemoteReadConfig struct {
	Name             string                  `yaml:"name"`
	URL              string                  `yaml:"url"`
	Timeout          model.Duration          `yaml:"timeout,omitempty"`
	HTTPClientConfig config.HTTPClientConfig `yaml:",inline"`
}

var clusterNameRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,62}[a-zA-Z0-9])?$`)

// UnmarshalYAML sets defaults and validates the cluster. File contents are read by Load, which
// knows the config's directory.
func (c *ClusterConfig) UnmarshalYAML(unmarshal func(any) error) error {
	type plain ClusterConfig
	if err := unmarshal((*plain)(c)); err != nil {
		// Say which cluster the YAML error (unknown field, bad duration) is in when its name
		// was read before the error.
		if c.Name != "" {
			return fmt.Errorf("cluster %q: %w", c.Name, err)
		}
		return err
	}
	if err := ValidateClusterName(c.Name); err != nil {
		return err
	}
	for name := range c.Labels {
		if !model.LabelName(name).IsValidLegacy() {
			return fmt.Errorf("cluster %q: labels: %q is not a valid label name", c.Name, name)
		}
		if name == ClusterLabel {
			return fmt.Errorf("cluster %q: labels: %q is reserved; the cluster's name is its %q label", c.Name, name, ClusterLabel)
		}
	}
	if c.CostPerCPUHour < 0 || math.IsNaN(c.CostPerCPUHour) || math.IsInf(c.CostPerCPUHour, 0) {
		return fmt.Errorf("cluster %q: cost_per_cpu_hour: must be a finite number >= 0, got %v", c.Name, c.CostPerCPUHour)
	}
	for i, t := range c.Compliance {
		if t == "" {
			return fmt.Errorf("cluster %q: compliance[%d]: must not be empty", c.Name, i)
		}
	}
	for ur, d := range c.Latency {
		if ur == "" || d < 0 {
			return fmt.Errorf("cluster %q: latency: %q: %s: the user region must be named and the latency >= 0", c.Name, ur, d)
		}
	}
	switch {
	case c.RemoteWrite == nil && c.Federate == nil:
		return fmt.Errorf("cluster %q: one of remote_write or federate must be set", c.Name)
	case c.RemoteWrite != nil && c.Federate != nil:
		return fmt.Errorf("cluster %q: remote_write and federate are mutually exclusive", c.Name)
	}
	if rw := c.RemoteWrite; rw != nil {
		switch {
		case rw.BearerTokenFile == "" && rw.BasicAuth == nil:
			return fmt.Errorf("cluster %q: remote_write: one of bearer_token_file or basic_auth must be set", c.Name)
		case rw.BearerTokenFile != "" && rw.BasicAuth != nil:
			return fmt.Errorf("cluster %q: remote_write: bearer_token_file and basic_auth are mutually exclusive", c.Name)
		}
		if ba := rw.BasicAuth; ba != nil {
			if ba.Username == "" {
				return fmt.Errorf("cluster %q: remote_write.basic_auth.username: must not be empty", c.Name)
			}
			// RFC 7617 splits user-id and password at the first colon, so a username with one
			// could never authenticate.
			if strings.Contains(ba.Username, ":") {
				return fmt.Errorf("cluster %q: remote_write.basic_auth.username: must not contain ':', got %q", c.Name, ba.Username)
			}
			if ba.PasswordFile == "" {
				return fmt.Errorf("cluster %q: remote_write.basic_auth.password_file: must not be empty", c.Name)
			}
		}
	}
	if f := c.Federate; f != nil {
		if err := f.validate(); err != nil {
			return fmt.Errorf("cluster %q: federate.%w", c.Name, err)
		}
	}
	return nil
}

func (f *FederateConfig) validate() error {
	if f.URL == "" {
		return errors.New("url: must not be empty")
	}
	if err := validateURL(f.URL); err != nil {
		return fmt.Errorf("url: %w", err)
	}
	if len(f.Match) == 0 {
		return errors.New("match: at least one selector is required; /federate returns nothing without match[]")
	}
	// The cluster's Prometheus would answer every scrape 400 for a selector it cannot parse.
	for i, m := range f.Match {
		if _, err := parser.ParseMetricSelector(m); err != nil {
			return fmt.Errorf("match[%d]: %q is not a valid series selector: %w", i, m, err)
		}
	}
	if f.Interval == 0 {
		f.Interval = DefaultFederateInterval
	}
	if f.Timeout == 0 {
		f.Timeout = min(DefaultFederateTimeout, f.Interval)
	}
	if f.Timeout > f.Interval {
		return fmt.Errorf("timeout: %s is longer than interval %s", f.Timeout, f.Interval)
	}
	if err := f.HTTPClientConfig.Validate(); err != nil {
		return fmt.Errorf("http client: %w", err)
	}
	return nil
}

func validateURL(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme must be http or https, got %q", u.Scheme)
	}
	if u.Host == "" {
		return errors.New("host must not be empty")
	}
	return nil
}

// UnmarshalYAML sets the ingest defaults and validates the limits.
func (c *IngestConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultIngest
	type plain IngestConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	return c.validate()
}

func (c *IngestConfig) validate() error {
	if c.MaxBodyBytes <= 0 {
		return fmt.Errorf("ingest: max_body_bytes: must be > 0, got %d", c.MaxBodyBytes)
	}
	if c.MaxInflightBytes < c.MaxBodyBytes {
		return fmt.Errorf("ingest: max_inflight_bytes: %d is smaller than max_body_bytes %d, so a full-sized request could never be accepted", c.MaxInflightBytes, c.MaxBodyBytes)
	}
	if f := c.Forward; f != nil {
		if err := validateURL(f.URL); err != nil {
			return fmt.Errorf("ingest: forward: url: %w", err)
		}
		if f.TenantHeader == "" {
			f.TenantHeader = DefaultTenantHeader
		}
		if f.Timeout == 0 {
			f.Timeout = DefaultForwardTimeout
		}
		if err := f.HTTPClientConfig.Validate(); err != nil {
			return fmt.Errorf("ingest: forward: http client: %w", err)
		}
	}
	return nil
}

// UnmarshalYAML sets the query defaults and validates the view's settings.
func (c *QueryConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*c = DefaultQuery
	type plain QueryConfig
	if err := unmarshal((*plain)(c)); err != nil {
		return fmt.Errorf("query: %w", err)
	}
	return c.validate()
}

func (c *QueryConfig) validate() error {
	if c.Engine != EngineThanos && c.Engine != EnginePrometheus {
		return fmt.Errorf("query: engine: must be %q or %q, got %q", EngineThanos, EnginePrometheus, c.Engine)
	}
	if c.LookbackDelta <= 0 {
		return fmt.Errorf("query: lookback_delta: must be > 0, got %s", c.LookbackDelta)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("query: timeout: must be > 0, got %s", c.Timeout)
	}
	if c.MaxSamples <= 0 {
		return fmt.Errorf("query: max_samples: must be > 0, got %d", c.MaxSamples)
	}
	for _, l := range c.ReplicaLabels {
		if !model.LabelName(l).IsValidLegacy() {
			return fmt.Errorf("query: replica_labels: %q is not a valid label name", l)
		}
		if l == ClusterLabel || l == labels.MetricName {
			return fmt.Errorf("query: replica_labels: %q cannot be a replica label", l)
		}
	}
	if c.ResultCache.MaxSizeBytes < 0 {
		return fmt.Errorf("query: result_cache.max_size_bytes: must be >= 0, got %d", c.ResultCache.MaxSizeBytes)
	}
	if c.ResultCache.Freshness < 0 {
		return fmt.Errorf("query: result_cache.freshness: must be >= 0, got %s", c.ResultCache.Freshness)
	}
	if c.ResultCache.SplitInterval <= 0 {
		return fmt.Errorf("query: result_cache.split_interval: must be > 0, got %s", c.ResultCache.SplitInterval)
	}
	names := map[string]bool{}
	for i, s := range c.Stores {
		if s == nil {
			return fmt.Errorf("query: stores[%d]: empty entry", i)
		}
		if s.Name == "" {
			return fmt.Errorf("query: stores[%d]: name: must not be empty", i)
		}
		if names[s.Name] {
			return fmt.Errorf("query: stores[%d] %q: name: duplicate remote source name", i, s.Name)
		}
		names[s.Name] = true
		if _, port, err := net.SplitHostPort(s.Address); err != nil || port == "" {
			return fmt.Errorf("query: stores[%d] %q: address: must be host:port, got %q", i, s.Name, s.Address)
		}
		if s.Timeout == 0 {
			s.Timeout = DefaultRemoteSourceTimeout
		}
	}
	for i, r := range c.RemoteRead {
		if r == nil {
			return fmt.Errorf("query: remote_read[%d]: empty entry", i)
		}
		if r.Name == "" {
			return fmt.Errorf("query: remote_read[%d]: name: must not be empty", i)
		}
		if names[r.Name] {
			return fmt.Errorf("query: remote_read[%d] %q: name: duplicate remote source name", i, r.Name)
		}
		names[r.Name] = true
		if err := validateURL(r.URL); err != nil {
			return fmt.Errorf("query: remote_read[%d] %q: url: %w", i, r.Name, err)
		}
		if r.Timeout == 0 {
			r.Timeout = DefaultRemoteSourceTimeout
		}
		if err := r.HTTPClientConfig.Validate(); err != nil {
			return fmt.Errorf("query: remote_read[%d] %q: http client: %w", i, r.Name, err)
		}
	}
	return nil
}

// Load parses and validates a configuration. dir is the directory relative paths (token and
// password files, TLS files) are resolved against; it is usually the config file's directory.
func Load(data []byte, dir string) (*Config, error) {
	cfg := &Config{Ingest: DefaultIngest, APIProbe: DefaultAPIProbe, Query: DefaultQuery, Rules: DefaultRules, Correlate: DefaultCorrelate, Schedule: DefaultSchedule, Remediation: DefaultRemediation}
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		return nil, err
	}
	// A section that is present but empty (`ingest:` with every setting commented out) is
	// decoded as null, which zeroes it without calling its UnmarshalYAML; it means "defaults",
	// as an empty `global:` does in Prometheus.
	if reflect.ValueOf(cfg.Ingest).IsZero() {
		cfg.Ingest = DefaultIngest
	}
	if reflect.ValueOf(cfg.APIProbe).IsZero() {
		cfg.APIProbe = DefaultAPIProbe
	}
	if reflect.ValueOf(cfg.Query).IsZero() {
		cfg.Query = DefaultQuery
	}
	if reflect.ValueOf(cfg.Rules).IsZero() {
		cfg.Rules = DefaultRules
	}
	if reflect.ValueOf(cfg.Correlate).IsZero() {
		cfg.Correlate = DefaultCorrelate
	}
	if reflect.ValueOf(cfg.Schedule).IsZero() {
		cfg.Schedule = DefaultSchedule
	}
	if reflect.ValueOf(cfg.Remediation).IsZero() {
		cfg.Remediation = DefaultRemediation
	}
	if o := cfg.Schedule.OCM; o != nil && o.Kubeconfig != "" {
		o.Kubeconfig = resolve(dir, o.Kubeconfig)
	}
	for i, f := range cfg.Rules.RuleFiles {
		cfg.Rules.RuleFiles[i] = resolve(dir, f)
	}
	if err := cfg.Ingest.validate(); err != nil {
		return nil, err
	}
	if err := cfg.Query.validate(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	creds := map[string]string{} // credential -> cluster, so two clusters cannot share one
	for i, c := range cfg.Clusters {
		if c == nil {
			return nil, fmt.Errorf("clusters[%d]: empty entry", i)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("cluster %q: name: defined more than once", c.Name)
		}
		seen[c.Name] = true
		if rw := c.RemoteWrite; rw != nil {
			var key string
			if rw.BearerTokenFile != "" {
				rw.BearerTokenFile = resolve(dir, rw.BearerTokenFile)
				tok, err := readSecret(rw.BearerTokenFile)
				if err != nil {
					return nil, fmt.Errorf("cluster %q: remote_write.bearer_token_file: %w", c.Name, err)
				}
				rw.BearerToken, key = tok, "bearer:"+tok
			} else {
				ba := rw.BasicAuth
				ba.PasswordFile = resolve(dir, ba.PasswordFile)
				pw, err := readSecret(ba.PasswordFile)
				if err != nil {
					return nil, fmt.Errorf("cluster %q: remote_write.basic_auth.password_file: %w", c.Name, err)
				}
				ba.Password, key = pw, "basic:"+ba.Username
			}
			if other, ok := creds[key]; ok {
				return nil, fmt.Errorf("cluster %q: remote_write: uses the same credentials as cluster %q; each cluster needs its own, or one could write as the other", c.Name, other)
			}
			creds[key] = c.Name
		}
		if f := c.Federate; f != nil {
			f.HTTPClientConfig.SetDirectory(dir)
		}
		if c.KubeconfigFile != "" {
			c.KubeconfigFile = resolve(dir, c.KubeconfigFile)
			rc, err := loadKubeconfig(c.KubeconfigFile)
			if err != nil {
				return nil, fmt.Errorf("cluster %q: kubeconfig_file: %w", c.Name, err)
			}
			c.KubeConfig = rc
		}
	}
	for _, a := range append(slices.Clone(cfg.Rules.Alertmanagers), cfg.Correlate.Alertmanagers...) {
		a.HTTPClientConfig.SetDirectory(dir)
	}
	if err := cfg.Access.validate(cfg.Clusters, dir); err != nil {
		return nil, err
	}
	if err := cfg.Hooks.load(dir); err != nil {
		return nil, err
	}
	if le := cfg.Remediation.LeaderElection; le != nil {
		if err := le.Validate(cfg.Clusters); err != nil {
			return nil, err
		}
	}
	for _, r := range cfg.Query.RemoteRead {
		r.HTTPClientConfig.SetDirectory(dir)
	}
	if f := cfg.Ingest.Forward; f != nil {
		f.HTTPClientConfig.SetDirectory(dir)
	}
	for _, s := range cfg.Query.Stores {
		if s.TLS != nil {
			s.TLS.SetDirectory(dir)
		}
	}
	return cfg, nil
}

// LoadFile reads and validates the configuration at path.
func LoadFile(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Load(data, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("load config %s: %w", path, err)
	}
	return cfg, nil
}

// Cluster returns the cluster with the given name, or nil.
func (c *Config) Cluster(name string) *ClusterConfig {
	for _, cl := range c.Clusters {
		if cl.Name == name {
			return cl
		}
	}
	return nil
}

func resolve(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// loadKubeconfig reads a kubeconfig as kubectl would (the files it names relative to its own
// directory) and returns the client configuration of its current context, with the TLS files
// and the token it names read and its server URL parsed, so that a kubeconfig fleetwatch could
// not use is refused when the configuration is loaded, not at the first probe.
func loadKubeconfig(path string) (*rest.Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kc, err := clientcmd.Load(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := clientcmd.ResolveConfigPaths(kc, filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// Without a current context client-go falls back to $KUBERNETES_MASTER or localhost:8080,
	// which is never the cluster that was meant.
	if kc.CurrentContext == "" {
		return nil, fmt.Errorf("%s: current-context is not set", path)
	}
	rc, err := clientcmd.NewNonInteractiveClientConfig(*kc, kc.CurrentContext, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, _, err := rest.DefaultServerUrlFor(rc); err != nil {
		return nil, fmt.Errorf("%s: server: %w", path, err)
	}
	if _, err := rest.TLSConfigFor(rc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rc, nil
}

// readSecret reads a credential file; surrounding white space (a trailing newline from `echo`)
// is not part of the secret.
func readSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

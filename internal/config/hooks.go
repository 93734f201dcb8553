package config

import (
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// HooksConfig is the on-call hooks section (hooks/README.md): signed outbound webhooks for
// incident and remediation events, and the key that signs approval links.
type HooksConfig struct {
	Receivers []*HookReceiverConfig `yaml:"receivers,omitempty"`
	// ApprovalSecretFile holds the key that signs approval tokens. Without it fleetwatch
	// generates one in its data directory; replicas that must honour each other's links
	// share a file.
	ApprovalSecretFile string `yaml:"approval_secret_file,omitempty"`
	ApprovalSecret     string `yaml:"-"`
}

// HookReceiverConfig is one webhook receiver.
type HookReceiverConfig struct {
	// Name identifies the receiver in metrics, the delivery state and its cursor: renaming
	// a receiver starts it afresh at the newest event.
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	// SecretFiles hold the HMAC-SHA256 keys deliveries are signed with, one signature per
	// key: list the new key first and the old one second while receivers switch over.
	SecretFiles []string `yaml:"secret_files"`
	Secrets     []string `yaml:"-"`
	// Events are the event types delivered ("incident.opened", "remediation.waiting_approval",
	// ...; hooks/README.md); empty: all of them.
	Events []string `yaml:"events,omitempty"`
	// Match keeps the events of incidents (and their remediations) that match every listed
	// field; an empty list matches anything.
	Match HookMatchConfig `yaml:"match,omitempty"`
	// Timeout bounds one delivery attempt.
	Timeout model.Duration `yaml:"timeout,omitempty"`
	// MinBackoff and MaxBackoff bound the wait between attempts while the receiver fails
	// (doubling from the first to the second).
	MinBackoff model.Duration `yaml:"min_backoff,omitempty"`
	MaxBackoff model.Duration `yaml:"max_backoff,omitempty"`
	// MaxEventAge: an event still undelivered this long after it happened is dropped
	// (counted and logged), so a receiver gone for good does not hold the journal forever.
	MaxEventAge model.Duration `yaml:"max_event_age,omitempty"`
	// HTTPClientConfig: tls_config, proxy_url, ... as Prometheus takes them.
	HTTPClientConfig config.HTTPClientConfig `yaml:",inline"`
}

// HookMatchConfig filters a receiver's events.
type HookMatchConfig struct {
	Scope    []string `yaml:"scope,omitempty"`
	Severity []string `yaml:"severity,omitempty"`
	Team     []string `yaml:"team,omitempty"`
	Cluster  []string `yaml:"cluster,omitempty"`
}

// DefaultHookReceiver are a receiver's defaults.
var DefaultHookReceiver = HookReceiverConfig{
	Timeout:     model.Duration(10 * time.Second),
	MinBackoff:  model.Duration(time.Second),
	MaxBackoff:  model.Duration(5 * time.Minute),
	MaxEventAge: model.Duration(72 * time.Hour),
}

var hookNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]+$`)

// UnmarshalYAML applies the defaults.
func (r *HookReceiverConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*r = DefaultHookReceiver
	r.HTTPClientConfig = config.DefaultHTTPClientConfig
	type plain HookReceiverConfig
	return unmarshal((*plain)(r))
}

// load checks the section and reads its secrets, file paths relative to dir.
func (h *HooksConfig) load(dir string) error {
	if h.ApprovalSecretFile != "" {
		h.ApprovalSecretFile = resolve(dir, h.ApprovalSecretFile)
		s, err := readSecret(h.ApprovalSecretFile)
		if err != nil {
			return fmt.Errorf("hooks.approval_secret_file: %w", err)
		}
		h.ApprovalSecret = s
	}
	seen := map[string]bool{}
	for i, r := range h.Receivers {
		if r == nil {
			return fmt.Errorf("hooks.receivers[%d]: empty entry", i)
		}
		where := fmt.Sprintf("hooks.receivers[%d] (%q)", i, r.Name)
		if !hookNameRE.MatchString(r.Name) {
			return fmt.Errorf("%s: name: must match %s", where, hookNameRE)
		}
		if seen[r.Name] {
			return fmt.Errorf("%s: name: defined more than once", where)
		}
		seen[r.Name] = true
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%s: url: %q is not an absolute http or https URL", where, r.URL)
		}
		if len(r.SecretFiles) == 0 || len(r.SecretFiles) > 2 {
			return fmt.Errorf("%s: secret_files: list one file, or two while rotating (the new key first)", where)
		}
		r.Secrets = r.Secrets[:0]
		for j, f := range r.SecretFiles {
			r.SecretFiles[j] = resolve(dir, f)
			s, err := readSecret(r.SecretFiles[j])
			if err != nil {
				return fmt.Errorf("%s: secret_files[%d]: %w", where, j, err)
			}
			r.Secrets = append(r.Secrets, s)
		}
		if r.Timeout <= 0 {
			return fmt.Errorf("%s: timeout: must be above 0", where)
		}
		if r.MinBackoff <= 0 || r.MaxBackoff < r.MinBackoff {
			return fmt.Errorf("%s: min_backoff and max_backoff: need 0 < min_backoff <= max_backoff", where)
		}
		if r.MaxEventAge <= 0 {
			return fmt.Errorf("%s: max_event_age: must be above 0", where)
		}
		r.HTTPClientConfig.SetDirectory(dir)
		if err := r.HTTPClientConfig.Validate(); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	return nil
}

package amconfig

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/alertmanager/config"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v2"
)

// The labels fleetwatch puts on the one alert it sends to Alertmanager per incident. Its
// annotations are summary, explanation, root_cause, clusters (the affected clusters, comma
// separated) and incident_id; Alertmanager cannot route or inhibit on annotations.
//
// The incident's key, not its ID, is the label: the key says what the problem is (the same
// alerts give the same key on every replica), while an ID is one process's name for it. Two
// fleetwatch replicas fed alike send Alertmanager the same alert for one problem, and it pages
// once.
const (
	AlertName = "FleetwatchIncident"

	LabelAlertName   = "alertname"
	LabelIncidentKey = "incident_key"
	// AnnotationIncidentID is the ID of the incident in the fleetwatch that sent it last
	// (GET /api/v1/incidents/{id} there).
	AnnotationIncidentID = "incident_id"
	LabelSeverity        = "severity" // SeverityCritical, SeverityWarning or SeverityInfo
	LabelScope           = "scope"    // ScopeCluster or ScopeFleet
	LabelCluster         = "cluster"  // only on cluster-scoped incidents
	LabelTeam            = "team"     // from the workload's namespace; may be absent

	SeverityCritical = "critical"
	SeverityWarning  = "warning"
	SeverityInfo     = "info"

	ScopeCluster = "cluster"
	ScopeFleet   = "fleet"
)

// Receivers of the generated configuration. Each team of the spec has its own, TeamReceiver.
const (
	// ReceiverFleetOncall gets fleet-scoped incidents, and cluster-scoped incidents no team of
	// the spec owns unless the spec names another default receiver.
	ReceiverFleetOncall = "fleet-oncall"
	// ReceiverAutomation is the on-call automation webhook; it sees every incident.
	ReceiverAutomation = "fleetwatch-automation"
	// ReceiverInfo takes info incidents (drift and the like) and notifies nobody: they are for
	// dashboards and the automation webhook.
	ReceiverInfo = "fleetwatch-info"

	teamReceiverPrefix = "team-"
)

// TeamReceiver is the name of a team's receiver.
func TeamReceiver(team string) string { return teamReceiverPrefix + team }

// Intervals are a route's notification timing (Alertmanager's group_wait, group_interval and
// repeat_interval).
type Intervals struct {
	GroupWait      model.Duration `yaml:"group_wait"`
	GroupInterval  model.Duration `yaml:"group_interval"`
	RepeatInterval model.Duration `yaml:"repeat_interval"`
}

// Timing is the notification timing per severity, and of the automation webhook.
type Timing struct {
	Critical   Intervals `yaml:"critical"`
	Warning    Intervals `yaml:"warning"`
	Info       Intervals `yaml:"info"`
	Automation Intervals `yaml:"automation"`
}

func minutes(m int) model.Duration { return model.Duration(time.Duration(m) * time.Minute) }

// DefaultTiming is the timing of the generated routes. Each incident is one alert that
// fleetwatch has already correlated, so group_wait only needs to absorb the incident's first
// updates; group_interval is how long a resolution waits to be told (a resolved alert is
// notified at the group's next tick); repeat_interval is how often an open incident is told
// again.
var DefaultTiming = Timing{
	// Pages: told within seconds, resolution within a minute, reminded hourly.
	Critical: Intervals{GroupWait: model.Duration(10 * time.Second), GroupInterval: minutes(1), RepeatInterval: minutes(60)},
	// Tickets and chat: reminded twice a day.
	Warning: Intervals{GroupWait: model.Duration(30 * time.Second), GroupInterval: minutes(5), RepeatInterval: minutes(12 * 60)},
	// Nobody is notified by default; if a receiver is added, once a day is enough.
	Info: Intervals{GroupWait: minutes(1), GroupInterval: minutes(15), RepeatInterval: minutes(24 * 60)},
	// Machines: at once, resolution within a minute; repeats are only a safety net, as
	// Alertmanager retries failed deliveries itself.
	Automation: Intervals{GroupWait: 0, GroupInterval: minutes(1), RepeatInterval: minutes(4 * 60)},
}

// Spec says who is notified of what. Receivers take Alertmanager's own receiver settings
// (slack_configs, pagerduty_configs, webhook_configs, email_configs, ...); testdata/
// teams.good.yml shows every field.
type Spec struct {
	// Global is Alertmanager's global section (SMTP, Slack app, default HTTP client, ...).
	Global *GlobalSpec `yaml:"global,omitempty"`
	// FleetOncall is the receiver of fleet-scoped incidents. Without it, the receiver has no
	// notifier and its incidents reach nobody but the automation webhook.
	FleetOncall *ReceiverSpec `yaml:"fleet_oncall,omitempty"`
	// Teams are the receivers of the incidents whose team label names them.
	Teams []*TeamSpec `yaml:"teams,omitempty"`
	// DefaultReceiver gets cluster-scoped incidents that no team of Teams owns: "fleet-oncall"
	// (the default) or the name of a team.
	DefaultReceiver string `yaml:"default_receiver,omitempty"`
	// Webhook is the on-call automation: it is sent every incident, firing and resolved.
	Webhook *WebhookSpec `yaml:"webhook,omitempty"`
	// Timing is the notification timing per severity.
	Timing Timing `yaml:"timing,omitempty"`
	// Inhibit adds the inhibition rules (README.md); default true.
	Inhibit bool `yaml:"inhibit"`

	// src is the file the spec was loaded from, to give errors found later a line.
	src *source
}

// DefaultSpec is the spec without a teams file: every incident goes to fleet-oncall, which has
// no notifier yet.
func DefaultSpec() *Spec {
	return &Spec{Timing: DefaultTiming, Inhibit: true}
}

// UnmarshalYAML sets the defaults of omitted keys.
func (s *Spec) UnmarshalYAML(unmarshal func(any) error) error {
	*s = *DefaultSpec()
	type plain Spec
	if err := unmarshal((*plain)(s)); err != nil {
		return err
	}
	// `timing:` with nothing under it decodes as null and zeroes the section; it means defaults.
	if reflect.ValueOf(s.Timing).IsZero() {
		s.Timing = DefaultTiming
	}
	return nil
}

// UnmarshalYAML keeps the default of every interval the file omits.
func (t *Timing) UnmarshalYAML(unmarshal func(any) error) error {
	*t = DefaultTiming
	type plain Timing
	if err := unmarshal((*plain)(t)); err != nil {
		return wrapAt("timing", "", err)
	}
	return nil
}

// GlobalSpec is Alertmanager's global section.
type GlobalSpec struct {
	Config config.GlobalConfig
	raw    yaml.MapSlice // as written: the values Alertmanager redacts when marshalling
}

// UnmarshalYAML reads the section with Alertmanager's own type, which sets its defaults.
func (g *GlobalSpec) UnmarshalYAML(unmarshal func(any) error) error {
	if err := unmarshal(&g.raw); err != nil {
		return err
	}
	if err := unmarshal(&g.Config); err != nil {
		return wrapAt("global", "", err)
	}
	return nil
}

// ReceiverSpec is an Alertmanager receiver without its name, which the generator sets.
type ReceiverSpec struct {
	Receiver config.Receiver
	raw      yaml.MapSlice
}

// plainReceiver is config.Receiver without its UnmarshalYAML, which insists on a name.
type plainReceiver config.Receiver

// UnmarshalYAML reads the receiver with Alertmanager's types, which validate each notifier.
// ReceiverSpec is only used for fleet_oncall, hence the key of its errors.
func (r *ReceiverSpec) UnmarshalYAML(unmarshal func(any) error) error {
	if err := unmarshal(&r.raw); err != nil {
		return err
	}
	if err := unmarshal((*plainReceiver)(&r.Receiver)); err != nil {
		return wrapAt("fleet_oncall", "", err)
	}
	if r.Receiver.Name != "" {
		return wrapAt("fleet_oncall", "", errors.New("name: must not be set; the receiver is "+ReceiverFleetOncall))
	}
	return nil
}

// TeamSpec is a team's receiver: `name` is the value of the incidents' team label, the rest is
// an Alertmanager receiver.
type TeamSpec struct {
	Name     string
	Receiver config.Receiver // named TeamReceiver(Name)
	raw      yaml.MapSlice
}

// UnmarshalYAML reads the team's receiver with Alertmanager's types.
func (t *TeamSpec) UnmarshalYAML(unmarshal func(any) error) error {
	if err := unmarshal(&t.raw); err != nil {
		return err
	}
	err := unmarshal((*plainReceiver)(&t.Receiver))
	// Say which team the error is in when its name was read before the error.
	t.Name = t.Receiver.Name
	if err != nil {
		return wrapAt("teams", t.Name, err)
	}
	if t.Name == "" {
		return wrapAt("teams", "", errors.New("name: must be set to the value of the incidents' team label"))
	}
	t.Receiver.Name = TeamReceiver(t.Name)
	return nil
}

// WebhookSpec is Alertmanager's webhook_config for the on-call automation.
type WebhookSpec struct {
	Config config.WebhookConfig
	raw    yaml.MapSlice
}

// UnmarshalYAML reads the webhook with Alertmanager's own type.
func (w *WebhookSpec) UnmarshalYAML(unmarshal func(any) error) error {
	if err := unmarshal(&w.raw); err != nil {
		return err
	}
	if err := unmarshal(&w.Config); err != nil {
		return wrapAt("webhook", "", err)
	}
	return nil
}

// SetWebhookURL sends the automation webhook to u, which is written into the configuration in
// clear; SetWebhookURLFile keeps a URL that carries a token out of it.
func (s *Spec) SetWebhookURL(u string) error {
	p, err := url.Parse(u)
	if err != nil {
		return err
	}
	if (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL with a host", u)
	}
	w := s.webhook()
	w.Config.URL, w.Config.URLFile = &config.SecretURL{URL: p}, ""
	w.raw = setKey(deleteKey(w.raw, "url_file"), "url", u)
	return nil
}

// SetWebhookURLFile has Alertmanager read the automation webhook's URL from path, which must be
// absolute: Alertmanager resolves only http_config's files against the directory of
// alertmanager.yml, and would read a relative url_file from its working directory.
func (s *Spec) SetWebhookURLFile(path string) error {
	if strings.TrimSpace(path) == "" {
		return errors.New("must not be empty")
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%q must be an absolute path: Alertmanager would read it relative to its working directory, not to alertmanager.yml", path)
	}
	w := s.webhook()
	w.Config.URL, w.Config.URLFile = nil, path
	w.raw = setKey(deleteKey(w.raw, "url"), "url_file", path)
	return nil
}

func (s *Spec) webhook() *WebhookSpec {
	if s.Webhook == nil {
		s.Webhook = &WebhookSpec{Config: config.DefaultWebhookConfig}
	}
	return s.Webhook
}

// SetDefaultReceiver sets the receiver of cluster-scoped incidents no team owns: fleet-oncall,
// a team's name or a team's receiver name.
func (s *Spec) SetDefaultReceiver(name string) error {
	if _, err := s.defaultReceiver(name); err != nil {
		return err
	}
	s.DefaultReceiver = name
	return nil
}

// defaultReceiver resolves name to a receiver of the generated configuration.
func (s *Spec) defaultReceiver(name string) (string, error) {
	if name == "" || name == ReceiverFleetOncall {
		return ReceiverFleetOncall, nil
	}
	choices := []string{ReceiverFleetOncall}
	for _, t := range s.Teams {
		if name == t.Name || name == TeamReceiver(t.Name) {
			return TeamReceiver(t.Name), nil
		}
		choices = append(choices, t.Name)
	}
	return "", fmt.Errorf("%q is neither %s nor a team of the teams file (one of: %s)", name, ReceiverFleetOncall, strings.Join(choices, ", "))
}

// Validate checks what the YAML types alone cannot: unique teams, the default receiver, the
// timing, and that every receiver passes Alertmanager's own checks.
func (s *Spec) Validate() error {
	return s.src.locate(s.validate())
}

func (s *Spec) validate() error {
	seen := map[string]bool{}
	for i, t := range s.Teams {
		if t == nil {
			return wrapAt("teams", "", fmt.Errorf("[%d]: empty entry", i))
		}
		if seen[t.Name] {
			return &atError{key: "teams", team: t.Name, second: true, err: errors.New("name: defined more than once")}
		}
		seen[t.Name] = true
	}
	if _, err := s.defaultReceiver(s.DefaultReceiver); err != nil {
		return wrapAt("default_receiver", "", err)
	}
	for _, it := range []struct {
		name string
		iv   Intervals
	}{{"critical", s.Timing.Critical}, {"warning", s.Timing.Warning}, {"info", s.Timing.Info}, {"automation", s.Timing.Automation}} {
		if err := it.iv.validate(); err != nil {
			return wrapAt("timing", "", fmt.Errorf("%s.%w", it.name, err))
		}
	}
	if w := s.Webhook; w != nil {
		if !w.Config.SendResolved() {
			return wrapAt("webhook", "", errors.New("send_resolved: must be true; the automation must see incidents resolve"))
		}
		if w.Config.URL == nil && w.Config.URLFile == "" {
			return wrapAt("webhook", "", errors.New("one of url or url_file must be configured"))
		}
	}
	// Alertmanager checks some settings only in the context of a whole configuration (a Slack
	// receiver needs an API URL here or in global, an email receiver a smarthost); check each
	// receiver alone so that the error names it.
	if r := s.FleetOncall; r != nil {
		if err := s.checkReceiver(ReceiverFleetOncall, r.Receiver, r.raw); err != nil {
			return wrapAt("fleet_oncall", "", err)
		}
	}
	for _, t := range s.Teams {
		if err := s.checkReceiver(t.Receiver.Name, t.Receiver, t.raw); err != nil {
			return wrapAt("teams", t.Name, err)
		}
	}
	if w := s.Webhook; w != nil {
		r, raw := automationReceiver(w)
		if err := s.checkReceiver(ReceiverAutomation, r, raw); err != nil {
			return wrapAt("webhook", "", err)
		}
	}
	return nil
}

func (iv Intervals) validate() error {
	switch {
	case iv.GroupWait < 0:
		return fmt.Errorf("group_wait: must be >= 0, got %s", iv.GroupWait)
	case iv.GroupInterval <= 0:
		return fmt.Errorf("group_interval: must be > 0, got %s", iv.GroupInterval)
	case iv.RepeatInterval <= 0:
		return fmt.Errorf("repeat_interval: must be > 0, got %s", iv.RepeatInterval)
	case iv.RepeatInterval < iv.GroupInterval:
		// Alertmanager only looks at a group every group_interval, so it could not repeat sooner.
		return fmt.Errorf("repeat_interval: %s is shorter than group_interval %s", iv.RepeatInterval, iv.GroupInterval)
	}
	return nil
}

// LoadSpec parses and validates a spec; name is the file name errors give with the line.
func LoadSpec(data []byte, name string) (*Spec, error) {
	src := &source{name: name, data: data}
	s := DefaultSpec()
	if err := yaml.UnmarshalStrict(data, s); err != nil {
		return nil, src.locate(err)
	}
	s.src = src
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadSpecFile reads and validates the spec at path.
func LoadSpecFile(path string) (*Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return LoadSpec(data, path)
}

// atError is an error about one top-level key of the spec, or one team of it.
type atError struct {
	key, team string
	second    bool // about the team's second entry
	err       error
}

func (e *atError) Error() string {
	if e.team != "" {
		return fmt.Sprintf("%s: team %q: %v", e.key, e.team, e.err)
	}
	return fmt.Sprintf("%s: %v", e.key, e.err)
}

func (e *atError) Unwrap() error { return e.err }

// wrapAt says where in the spec err is. YAML type errors already carry their lines and are
// passed on as they are, so that the decoder still collects all of them.
func wrapAt(key, team string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return err
	}
	var ae *atError
	if errors.As(err, &ae) {
		return err
	}
	return &atError{key: key, team: team, err: err}
}

// source is a spec file, to turn errors into "file:line: message".
type source struct {
	name string
	data []byte
}

var (
	yamlLineRE      = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	typeErrorLineRE = regexp.MustCompile(`^line (\d+): (.*)$`)
	notFoundRE      = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
)

// locate prefixes err with the file name and, where it can be found, the line.
func (src *source) locate(err error) error {
	if err == nil || src == nil {
		return err
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			if m := typeErrorLineRE.FindStringSubmatch(e); m != nil {
				msg := m[2]
				if f := notFoundRE.FindStringSubmatch(msg); f != nil {
					msg = fmt.Sprintf("unknown field %q", f[1])
				}
				msgs = append(msgs, fmt.Sprintf("%s:%s: %s", src.name, m[1], msg))
				continue
			}
			msgs = append(msgs, fmt.Sprintf("%s: %s", src.name, e))
		}
		return errors.New(strings.Join(msgs, "\n"))
	}
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("%s:%s: %s", src.name, m[1], m[2])
	}
	var ae *atError
	if errors.As(err, &ae) {
		if line := src.line(ae.key, ae.team, ae.second); line > 0 {
			return fmt.Errorf("%s:%d: %w", src.name, line, err)
		}
	}
	return fmt.Errorf("%s: %w", src.name, err)
}

// line finds the line of a top-level key, or of the `name:` of a team under teams (of its
// second entry if second), in a spec written in YAML's block style; 0 if it cannot.
func (src *source) line(key, team string, second bool) int {
	lines := strings.Split(string(src.data), "\n")
	keyRE := regexp.MustCompile(`^` + regexp.QuoteMeta(key) + `\s*:`)
	start := -1
	for i, l := range lines {
		if keyRE.MatchString(l) {
			start = i
			break
		}
	}
	if start < 0 {
		return 0
	}
	if team == "" {
		return start + 1
	}
	names := []string{regexp.QuoteMeta(team), regexp.QuoteMeta(strconv.Quote(team)), regexp.QuoteMeta("'" + team + "'")}
	nameRE := regexp.MustCompile(`^\s*(-\s+)?name\s*:\s*(` + strings.Join(names, "|") + `)\s*(#.*)?$`)
	for i := start + 1; i < len(lines); i++ {
		if l := lines[i]; l != "" && l[0] != ' ' && l[0] != '-' && l[0] != '#' {
			break // the next top-level key
		}
		if nameRE.MatchString(lines[i]) {
			if second {
				second = false
				continue
			}
			return i + 1
		}
	}
	return start + 1
}

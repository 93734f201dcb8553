package sim

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v2"
)

//go:embed scenarios/*.yml
var bundledFS embed.FS

// Action is what a scenario step does.
type Action string

// The actions a step can take. Fields per action:
//
//	nodes_not_ready     cluster, count, [crash: pods on them crash-loop], [restarts_per_minute=6]
//	cordon              cluster, count
//	crashloop           cluster | clusters, namespace, deployment, [restarts_per_minute=6]
//	rollout             cluster | clusters, namespace, deployment, image, [crash], [restarts_per_minute=6]
//	saturation          cluster, cpu and/or memory (target ratio), [over]
//	silence             cluster
//	control_plane_down  cluster
//	image_drift         cluster, namespace, deployment, image
//	recover             [cluster] (none: every cluster)
const (
	ActionNodesNotReady    Action = "nodes_not_ready"
	ActionCordon           Action = "cordon"
	ActionCrashloop        Action = "crashloop"
	ActionRollout          Action = "rollout"
	ActionSaturation       Action = "saturation"
	ActionSilence          Action = "silence"
	ActionControlPlaneDown Action = "control_plane_down"
	ActionImageDrift       Action = "image_drift"
	ActionRecover          Action = "recover"
)

// Scenario is a named list of timed steps.
type Scenario struct {
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
	// Loop starts over after the last step; the first step's After then counts from the last.
	Loop  bool   `yaml:"loop,omitempty" json:"loop"`
	Steps []Step `yaml:"steps" json:"steps"`
}

// Step is one action. After is the delay since the previous step (since the start for the
// first one).
type Step struct {
	After             model.Duration `yaml:"after" json:"after"`
	Action            Action         `yaml:"action" json:"action"`
	Cluster           string         `yaml:"cluster,omitempty" json:"cluster,omitempty"`
	Clusters          []string       `yaml:"clusters,omitempty" json:"clusters,omitempty"`
	Count             int            `yaml:"count,omitempty" json:"count,omitempty"`
	Namespace         string         `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	Deployment        string         `yaml:"deployment,omitempty" json:"deployment,omitempty"`
	Image             string         `yaml:"image,omitempty" json:"image,omitempty"`
	Crash             bool           `yaml:"crash,omitempty" json:"crash,omitempty"`
	RestartsPerMinute float64        `yaml:"restarts_per_minute,omitempty" json:"restarts_per_minute,omitempty"`
	CPU               float64        `yaml:"cpu,omitempty" json:"cpu,omitempty"`
	Memory            float64        `yaml:"memory,omitempty" json:"memory,omitempty"`
	Over              model.Duration `yaml:"over,omitempty" json:"over,omitempty"`
}

// FieldError names the step and field a scenario is wrong about. Step is -1 for fields of
// the scenario itself.
type FieldError struct {
	Step  int
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Step < 0 {
		return e.Field + ": " + e.Msg
	}
	return fmt.Sprintf("steps[%d].%s: %s", e.Step, e.Field, e.Msg)
}

// ParseError is a YAML error; Line is 0 when the decoder did not say.
type ParseError struct {
	Line int
	Err  error
}

func (e *ParseError) Error() string { return "parse scenario: " + e.Err.Error() }
func (e *ParseError) Unwrap() error { return e.Err }

var (
	scenarioNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	yamlLineRE     = regexp.MustCompile(`line (\d+)`)
	// Label values kube-state-metrics would export; anything printable without spaces.
	imageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?(@sha256:[a-f0-9]{64})?$`)
)

// ParseScenario decodes and validates one scenario. Unknown fields are rejected with their
// line; invalid values are reported as a *FieldError naming the step index and field.
func ParseScenario(data []byte) (*Scenario, error) {
	var sc Scenario
	if err := yaml.UnmarshalStrict(data, &sc); err != nil {
		pe := &ParseError{Err: err}
		if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
			pe.Line, _ = strconv.Atoi(m[1])
		}
		return nil, pe
	}
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	return &sc, nil
}

// ParseScenarioFile reads and parses a scenario file.
func ParseScenarioFile(name string) (*Scenario, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read scenario file: %w", err)
	}
	sc, err := ParseScenario(data)
	if err != nil {
		return nil, fmt.Errorf("scenario file %s: %w", name, err)
	}
	return sc, nil
}

// BundledScenarios returns the scenarios embedded in the binary, sorted by name.
func BundledScenarios() ([]*Scenario, error) {
	files, err := fs.Glob(bundledFS, "scenarios/*.yml")
	if err != nil {
		return nil, err
	}
	var out []*Scenario
	for _, f := range files {
		data, err := bundledFS.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read bundled scenario %s: %w", f, err)
		}
		sc, err := ParseScenario(data)
		if err != nil {
			return nil, fmt.Errorf("bundled scenario %s: %w", path.Base(f), err)
		}
		out = append(out, sc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Validate checks a scenario's structure. Whether the clusters and deployments it names
// exist is checked against a Sim when it is added or started.
func (sc *Scenario) Validate() error {
	if sc.Name == "" {
		return &FieldError{Step: -1, Field: "name", Msg: "required"}
	}
	if !scenarioNameRE.MatchString(sc.Name) {
		return &FieldError{Step: -1, Field: "name", Msg: fmt.Sprintf("%q must be lower-case letters, digits and '-'", sc.Name)}
	}
	if len(sc.Steps) == 0 {
		return &FieldError{Step: -1, Field: "steps", Msg: "at least one step is required"}
	}
	var total time.Duration
	for i := range sc.Steps {
		if err := sc.Steps[i].validate(); err != nil {
			var fe *FieldError
			if errors.As(err, &fe) {
				fe.Step = i
			}
			return err
		}
		total += time.Duration(sc.Steps[i].After)
	}
	if sc.Loop && total <= 0 {
		return &FieldError{Step: -1, Field: "loop", Msg: "a looping scenario needs steps whose after add up to more than 0s"}
	}
	return nil
}

type fieldRule struct {
	required []string
	optional []string
	// oneOf: at least one of these is required (and for cluster/clusters, exactly one).
	oneOf []string
}

var actionRules = map[Action]fieldRule{
	ActionNodesNotReady:    {required: []string{"cluster", "count"}, optional: []string{"crash", "restarts_per_minute"}},
	ActionCordon:           {required: []string{"cluster", "count"}},
	ActionCrashloop:        {required: []string{"namespace", "deployment"}, optional: []string{"restarts_per_minute"}, oneOf: []string{"cluster", "clusters"}},
	ActionRollout:          {required: []string{"namespace", "deployment", "image"}, optional: []string{"crash", "restarts_per_minute"}, oneOf: []string{"cluster", "clusters"}},
	ActionSaturation:       {required: []string{"cluster"}, optional: []string{"over"}, oneOf: []string{"cpu", "memory"}},
	ActionSilence:          {required: []string{"cluster"}},
	ActionControlPlaneDown: {required: []string{"cluster"}},
	ActionImageDrift:       {required: []string{"cluster", "namespace", "deployment", "image"}},
	ActionRecover:          {optional: []string{"cluster"}},
}

// Actions lists the known actions, sorted.
func Actions() []Action {
	out := make([]Action, 0, len(actionRules))
	for a := range actionRules {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// setFields lists the fields of a step that are set, in declaration order.
func (st *Step) setFields() []string {
	var f []string
	add := func(name string, set bool) {
		if set {
			f = append(f, name)
		}
	}
	add("cluster", st.Cluster != "")
	add("clusters", len(st.Clusters) > 0)
	add("count", st.Count != 0)
	add("namespace", st.Namespace != "")
	add("deployment", st.Deployment != "")
	add("image", st.Image != "")
	add("crash", st.Crash)
	add("restarts_per_minute", st.RestartsPerMinute != 0)
	add("cpu", st.CPU != 0)
	add("memory", st.Memory != 0)
	add("over", st.Over != 0)
	return f
}

func (st *Step) validate() error {
	fe := func(field, format string, args ...any) error {
		return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if st.Action == "" {
		return fe("action", "required (one of %s)", actionList())
	}
	rule, ok := actionRules[st.Action]
	if !ok {
		return fe("action", "unknown action %q (one of %s)", st.Action, actionList())
	}
	if st.After < 0 {
		return fe("after", "must not be negative")
	}
	allowed := map[string]bool{}
	for _, l := range [][]string{rule.required, rule.optional, rule.oneOf} {
		for _, f := range l {
			allowed[f] = true
		}
	}
	set := map[string]bool{}
	for _, f := range st.setFields() {
		if !allowed[f] {
			return fe(f, "not allowed for action %s", st.Action)
		}
		set[f] = true
	}
	for _, f := range rule.required {
		if !set[f] {
			return fe(f, "required for action %s", st.Action)
		}
	}
	if len(rule.oneOf) > 0 {
		n := 0
		for _, f := range rule.oneOf {
			if set[f] {
				n++
			}
		}
		if n == 0 {
			return fe(rule.oneOf[0], "%s required for action %s", strings.Join(rule.oneOf, " or "), st.Action)
		}
		if n > 1 && rule.oneOf[0] == "cluster" {
			return fe("clusters", "set either cluster or clusters, not both")
		}
	}
	if st.Cluster != "" && !clusterNameRE.MatchString(st.Cluster) {
		return fe("cluster", "invalid cluster name %q", st.Cluster)
	}
	seen := map[string]bool{}
	for i, c := range st.Clusters {
		if !clusterNameRE.MatchString(c) {
			return fe(fmt.Sprintf("clusters[%d]", i), "invalid cluster name %q", c)
		}
		if seen[c] {
			return fe(fmt.Sprintf("clusters[%d]", i), "duplicate cluster %q", c)
		}
		seen[c] = true
	}
	if set["count"] && st.Count < 0 {
		return fe("count", "must be a positive number of nodes, got %d", st.Count)
	}
	if st.RestartsPerMinute < 0 {
		return fe("restarts_per_minute", "must not be negative")
	}
	if st.CPU < 0 || st.CPU > 1 {
		return fe("cpu", "target ratio must be in (0, 1], got %g", st.CPU)
	}
	if st.Memory < 0 || st.Memory > 1 {
		return fe("memory", "target ratio must be in (0, 1], got %g", st.Memory)
	}
	if st.Over < 0 {
		return fe("over", "must not be negative")
	}
	if st.Image != "" && !imageRE.MatchString(st.Image) {
		return fe("image", "invalid image reference %q", st.Image)
	}
	return nil
}

func actionList() string {
	var s []string
	for _, a := range Actions() {
		s = append(s, string(a))
	}
	return strings.Join(s, ", ")
}

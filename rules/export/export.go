package export

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"

	"github.com/fleetwatch/fleetwatch/rules/lint"
)

// APIVersion and Kind of the manifest.
const (
	APIVersion = "monitoring.coreos.com/v1"
	Kind       = "PrometheusRule"
)

// DefaultLabels are put on every manifest; Options.Labels add to them or override them.
var DefaultLabels = map[string]string{
	"app.kubernetes.io/name":      "fleetwatch",
	"app.kubernetes.io/component": "rules",
}

// PrometheusRule is the part of the operator's resource that the manifest fills.
type PrometheusRule struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   Metadata `yaml:"metadata"`
	Spec       Spec     `yaml:"spec"`
}

// Metadata is the object metadata of the manifest.
type Metadata struct {
	Name      string            `yaml:"name"`
	Namespace string            `yaml:"namespace,omitempty"`
	Labels    map[string]string `yaml:"labels,omitempty"`
}

// Spec holds the rule groups, as in a Prometheus rule file.
type Spec struct {
	Groups []rulefmt.RuleGroup `yaml:"groups"`
}

// File is one rule file to export.
type File struct {
	Name    string
	Content []byte
}

// Options configure the manifest.
type Options struct {
	// Name is metadata.name. Required.
	Name string
	// Namespace is metadata.namespace; empty leaves it out, so `kubectl apply -n` decides.
	Namespace string
	// Labels are added to DefaultLabels (and win over them); the operator's ruleSelector
	// usually matches one of them.
	Labels map[string]string
	// Member leaves out the rules that only make sense on fleetwatch's global view.
	Member bool
	// Source says in the header comment where the rules come from, e.g. "the built-in rule
	// pack with the thresholds of fleetwatch.yml".
	Source string
	// Generator says in the header comment what wrote the manifest (default
	// "`fleetwatch rules export`").
	Generator string
}

// Dropped is a rule left out of a member cluster's manifest.
type Dropped struct {
	Group, Rule string
	Reason      string
}

func (d Dropped) String() string { return d.Group + "/" + d.Rule + ": " + d.Reason }

// Manifest parses the rule files and returns them as one PrometheusRule manifest, with the
// rules left out for a member cluster (none unless o.Member is set). Groups keep the order of
// files and of groups in each file.
func Manifest(files []File, o Options) ([]byte, []Dropped, error) {
	if err := ValidateName(o.Name); err != nil {
		return nil, nil, fmt.Errorf("name: %w", err)
	}
	if o.Namespace != "" {
		if err := ValidateNamespace(o.Namespace); err != nil {
			return nil, nil, fmt.Errorf("namespace: %w", err)
		}
	}
	lbls := maps.Clone(DefaultLabels)
	for k, v := range o.Labels {
		if err := ValidateLabel(k, v); err != nil {
			return nil, nil, fmt.Errorf("labels: %w", err)
		}
		lbls[k] = v
	}

	var groups []rulefmt.RuleGroup
	defined := map[string]string{} // group name -> file
	for _, f := range files {
		rf, err := lint.Parse(f.Name, f.Content)
		if err != nil {
			return nil, nil, err
		}
		for _, g := range rf.Groups {
			// The operator writes a PrometheusRule into one rule file, where group names must be
			// unique.
			if other, ok := defined[g.Name]; ok {
				return nil, nil, fmt.Errorf("%s: group %q is also defined in %s; group names must be unique in a PrometheusRule", f.Name, g.Name, other)
			}
			defined[g.Name] = f.Name
			groups = append(groups, g)
		}
	}
	var dropped []Dropped
	var droppedGroups []string
	if o.Member {
		var err error
		groups, dropped, droppedGroups, err = member(groups)
		if err != nil {
			return nil, nil, err
		}
	}

	var buf bytes.Buffer
	writeHeader(&buf, o, dropped, droppedGroups)
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	pr := PrometheusRule{
		APIVersion: APIVersion,
		Kind:       Kind,
		Metadata:   Metadata{Name: o.Name, Namespace: o.Namespace, Labels: lbls},
		Spec:       Spec{Groups: groups},
	}
	if pr.Spec.Groups == nil {
		pr.Spec.Groups = []rulefmt.RuleGroup{}
	}
	if err := enc.Encode(pr); err != nil {
		return nil, nil, fmt.Errorf("marshal PrometheusRule: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, nil, fmt.Errorf("marshal PrometheusRule: %w", err)
	}
	// A multi-line expr whose first line is indented needs a block indentation indicator, which
	// YAML emitters have got wrong before; read the manifest back to be sure it says what it
	// should.
	var back PrometheusRule
	if err := yaml.Unmarshal(buf.Bytes(), &back); err != nil || !reflect.DeepEqual(back.Spec.Groups, pr.Spec.Groups) {
		return nil, nil, fmt.Errorf("marshal PrometheusRule: the manifest does not read back as the rule groups (%v)", err)
	}
	return buf.Bytes(), dropped, nil
}

func writeHeader(buf *bytes.Buffer, o Options, dropped []Dropped, droppedGroups []string) {
	src := o.Source
	if src == "" {
		src = "Prometheus rule files"
	}
	if o.Generator != "" {
		fmt.Fprintf(buf, "# PrometheusRule generated by %s from %s.\n# Do not edit: change the rules there and generate again.\n", o.Generator, src)
	} else {
		fmt.Fprintf(buf, "# PrometheusRule generated by `fleetwatch rules export` from %s.\n", src)
		buf.WriteString("# Do not edit: change fleetwatch's configuration and export again.\n")
	}
	if !o.Member {
		return
	}
	buf.WriteString("#\n# For a member cluster (--member). Left out because they only make sense on fleetwatch's\n# global view, which holds the series of every cluster and fleetwatch's own:\n")
	for _, g := range droppedGroups {
		fmt.Fprintf(buf, "#   group %s, all of its rules:\n", g)
		for _, d := range dropped {
			if d.Group == g {
				fmt.Fprintf(buf, "#     %s: %s\n", d.Rule, d.Reason)
			}
		}
	}
	for _, d := range dropped {
		if !slices.Contains(droppedGroups, d.Group) {
			fmt.Fprintf(buf, "#   %s\n", d)
		}
	}
	if len(dropped) == 0 {
		buf.WriteString("#   nothing\n")
	}
	buf.WriteString("# The rules group by the cluster label. A member cluster's own series usually do not carry\n" +
		"# it (external labels are added to alerts, not to series): the rules still work, each giving\n" +
		"# one series for the whole cluster, but {{ $labels.cluster }} in annotations is empty.\n")
}

// ruleRef is one rule of a manifest being filtered.
type ruleRef struct {
	group, index int
	name         string
	alert        bool
	reads        []string
	reason       string
}

// member leaves out the rules of groups that only make sense on the global view, and returns the
// kept groups, the dropped rules and the names of the groups left out entirely.
func member(groups []rulefmt.RuleGroup) ([]rulefmt.RuleGroup, []Dropped, []string, error) {
	var refs []*ruleRef
	recordedBy := map[string][]*ruleRef{}
	for gi, g := range groups {
		for ri, r := range g.Rules {
			expr, err := parser.ParseExpr(r.Expr)
			if err != nil {
				return nil, nil, nil, fmt.Errorf("group %q, rule %d: %w", g.Name, ri+1, err)
			}
			ref := &ruleRef{group: gi, index: ri, name: r.Record, alert: r.Alert != "", reads: lint.MetricNames(expr)}
			if ref.alert {
				ref.name = r.Alert
			}
			for _, n := range ref.reads {
				if strings.HasPrefix(n, "fleetwatch_") {
					ref.reason = "reads " + n + ", which only fleetwatch writes"
					break
				}
			}
			if ref.reason == "" {
				for _, is := range lint.Expr(expr, r.Expr) {
					if is.Check.CrossCluster() {
						// "count by (namespace)" leaves out cluster, so it aggregates ...
						what, _, _ := strings.Cut(is.Message, ", so ")
						ref.reason = "compares clusters: " + what
						break
					}
				}
			}
			refs = append(refs, ref)
			if !ref.alert {
				recordedBy[ref.name] = append(recordedBy[ref.name], ref)
			}
		}
	}
	readers := map[*ruleRef][]*ruleRef{}
	for _, ref := range refs {
		for _, n := range ref.reads {
			for _, rec := range recordedBy[n] {
				readers[rec] = append(readers[rec], ref)
			}
		}
	}
	for changed := true; changed; {
		changed = false
		for _, ref := range refs {
			if ref.reason != "" {
				continue
			}
			// What a left-out rule records no longer exists in the member cluster.
			for _, n := range ref.reads {
				for _, rec := range recordedBy[n] {
					if rec.reason != "" {
						ref.reason = "reads " + n + ", which a left-out rule records"
					}
				}
			}
			// A recording rule whose readers are all left out only fed them.
			if ref.reason == "" && !ref.alert && len(readers[ref]) > 0 {
				var names []string
				for _, rd := range readers[ref] {
					if rd.reason == "" {
						names = nil
						break
					}
					if !slices.Contains(names, rd.name) {
						names = append(names, rd.name)
					}
				}
				if names != nil {
					ref.reason = "only feeds left-out rules (" + strings.Join(names, ", ") + ")"
				}
			}
			if ref.reason != "" {
				changed = true
			}
		}
	}

	var (
		kept          []rulefmt.RuleGroup
		dropped       []Dropped
		droppedGroups []string
	)
	for gi, g := range groups {
		var rules []rulefmt.Rule
		for _, ref := range refs {
			if ref.group != gi {
				continue
			}
			if ref.reason != "" {
				dropped = append(dropped, Dropped{Group: g.Name, Rule: ref.name, Reason: ref.reason})
				continue
			}
			rules = append(rules, g.Rules[ref.index])
		}
		if len(rules) == 0 && len(g.Rules) > 0 {
			droppedGroups = append(droppedGroups, g.Name)
			continue
		}
		g.Rules = rules
		kept = append(kept, g)
	}
	return kept, dropped, droppedGroups, nil
}

var (
	dns1123LabelRE     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123SubdomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelNameRE        = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	labelValueRE       = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
)

// ValidateName checks a Kubernetes object name (a DNS-1123 subdomain).
func ValidateName(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if len(s) > 253 || !dns1123SubdomainRE.MatchString(s) {
		return fmt.Errorf("%q is not a valid object name: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit", s)
	}
	return nil
}

// ValidateNamespace checks a Kubernetes namespace name (a DNS-1123 label).
func ValidateNamespace(s string) error {
	if len(s) > 63 || !dns1123LabelRE.MatchString(s) {
		return fmt.Errorf("%q is not a valid namespace: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", s)
	}
	return nil
}

// ValidateLabel checks a Kubernetes label: an optional DNS subdomain prefix and a name, and a
// value of at most 63 characters.
func ValidateLabel(key, value string) error {
	prefix, name, ok := strings.Cut(key, "/")
	if !ok {
		prefix, name = "", key
	}
	if ok && (prefix == "" || len(prefix) > 253 || !dns1123SubdomainRE.MatchString(prefix)) {
		return fmt.Errorf("label %q: the prefix must be a DNS subdomain (lowercase letters, digits, '-' and '.')", key)
	}
	if len(name) > 63 || !labelNameRE.MatchString(name) {
		return fmt.Errorf("label %q: the name must be at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", key)
	}
	if len(value) > 63 || !labelValueRE.MatchString(value) {
		return fmt.Errorf("label %q: value %q must be at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", key, value)
	}
	return nil
}

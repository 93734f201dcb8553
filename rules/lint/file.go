package lint

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/parser/posrange"
	"gopkg.in/yaml.v3"
)

// Finding is an issue located in a rule file.
type Finding struct {
	File  string
	Line  int
	Group string
	Rule  string
	Issue
}

// String formats the finding as "file:line: rule NAME: message".
func (f Finding) String() string {
	return fmt.Sprintf("%s:%d: rule %s: %s", f.File, f.Line, f.Rule, f.Message)
}

// ParseError is a rule file that does not load. Each problem reads "file:line: message" when
// the line is known, "file: message" otherwise.
type ParseError struct {
	File     string
	Problems []string
}

func (e *ParseError) Error() string { return strings.Join(e.Problems, "\n") }

// Rule is one rule of a parsed file.
type Rule struct {
	Group string
	rulefmt.Rule
	// Line is the line of the rule's first key.
	Line int
	// FleetWide is set when a comment of the rule carries FleetWideMarker.
	FleetWide bool

	expr *yaml.Node
}

// Name is the rule's alert or record name.
func (r *Rule) Name() string {
	if r.Alert != "" {
		return r.Alert
	}
	return r.Record
}

// RuleFile is a rule file that loaded: its groups as Prometheus reads them, and its rules with
// their lines.
type RuleFile struct {
	Name   string
	Groups []rulefmt.RuleGroup
	// Rules are the rules of every group, in file order.
	Rules []Rule
}

// Parse loads a rule file as Prometheus does (rulefmt, which also parses every expression and
// alert template). name is only used in messages. The error is a *ParseError.
func Parse(name string, content []byte) (*RuleFile, error) {
	rgs, errs := rulefmt.Parse(content, false, model.UTF8Validation)
	// The node tree gives the lines rulefmt's own errors do not always carry.
	nodes, nodeErr := ruleNodes(content)
	if len(errs) > 0 {
		pe := &ParseError{File: name}
		seen := map[string]bool{}
		for _, err := range errs {
			// A YAML error is reported twice, by both of rulefmt's decoding passes.
			for _, p := range problems(name, err, nodes) {
				if !seen[p] {
					seen[p] = true
					pe.Problems = append(pe.Problems, p)
				}
			}
		}
		return nil, pe
	}
	if nodeErr != nil {
		// rulefmt read the same bytes with the same YAML package; this cannot happen.
		return nil, &ParseError{File: name, Problems: []string{fmt.Sprintf("%s: %v", name, nodeErr)}}
	}
	lines := strings.Split(string(content), "\n")
	rf := &RuleFile{Name: name, Groups: rgs.Groups}
	for gi, g := range rgs.Groups {
		for ri, r := range g.Rules {
			rule := Rule{Group: g.Name, Rule: r}
			if gi < len(nodes.groups) && ri < len(nodes.groups[gi].rules) {
				n := nodes.groups[gi].rules[ri]
				rule.Line, rule.expr = n.line, n.expr
				rule.FleetWide = nodes.marked(lines, nodes.groups[gi].line) || nodes.marked(lines, n.line)
			}
			rf.Rules = append(rf.Rules, rule)
		}
	}
	return rf, nil
}

// Lint checks every rule of the file. Findings are in file order.
func (f *RuleFile) Lint() []Finding {
	var out []Finding
	for i := range f.Rules {
		r := &f.Rules[i]
		expr, err := parser.ParseExpr(r.Expr)
		if err != nil {
			// Parse has checked every expression already.
			continue
		}
		for _, is := range Expr(expr, r.Expr) {
			if r.FleetWide && is.Check.CrossCluster() {
				continue
			}
			out = append(out, Finding{File: f.Name, Line: r.exprLine(is.Pos), Group: r.Group, Rule: r.Name(), Issue: is})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Line < out[j].Line })
	return out
}

// File parses and lints one rule file.
func File(name string, content []byte) ([]Finding, error) {
	rf, err := Parse(name, content)
	if err != nil {
		return nil, err
	}
	return rf.Lint(), nil
}

// exprLine is the file line of position pos of the rule's expression. Only a literal block
// (expr: |) keeps the expression's line breaks as they are in the file; any other style is
// reported at the line of the expr key.
func (r *Rule) exprLine(pos posrange.Pos) int {
	n := r.expr
	if n == nil {
		return r.Line
	}
	if n.Style&yaml.LiteralStyle != 0 && int(pos) <= len(r.Expr) {
		return n.Line + 1 + strings.Count(r.Expr[:pos], "\n")
	}
	return n.Line
}

type fileNodes struct {
	groups []groupNode
	// starts are the first lines of every group and rule, sorted: where the comments of the
	// next rule may begin.
	starts []int
}

type groupNode struct {
	name  string
	line  int
	rules []ruleNode
}

type ruleNode struct {
	line int
	expr *yaml.Node
}

// ruleNodes finds the groups and rules of a rule file in its YAML node tree.
func ruleNodes(content []byte) (*fileNodes, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(content, &doc); err != nil {
		return &fileNodes{}, err
	}
	fn := &fileNodes{}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return fn, nil
	}
	groups := mapValue(doc.Content[0], "groups")
	if groups == nil || groups.Kind != yaml.SequenceNode {
		return fn, nil
	}
	for _, g := range groups.Content {
		if g = mapping(g); g == nil {
			continue
		}
		gn := groupNode{line: g.Line}
		if name := mapValue(g, "name"); name != nil {
			gn.name = name.Value
		}
		fn.starts = append(fn.starts, g.Line)
		if rules := mapValue(g, "rules"); rules != nil && rules.Kind == yaml.SequenceNode {
			for _, r := range rules.Content {
				if r = mapping(r); r == nil {
					continue
				}
				gn.rules = append(gn.rules, ruleNode{line: r.Line, expr: mapValue(r, "expr")})
				fn.starts = append(fn.starts, r.Line)
			}
		}
		fn.groups = append(fn.groups, gn)
	}
	sort.Ints(fn.starts)
	return fn, nil
}

// mapping resolves an alias and returns n if it is a mapping. Decoding skips the null items of
// a list (a "-" with nothing after it), so the node tree must skip them too to stay in step.
func mapping(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	return n
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	m = mapping(m)
	if m == nil {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			v := m.Content[i+1]
			for v.Kind == yaml.AliasNode && v.Alias != nil {
				v = v.Alias
			}
			return v
		}
	}
	return nil
}

// marked reports whether the group or rule starting at line start carries FleetWideMarker in a
// comment. Its lines run from the comment lines just above it to the line before the comments
// of the next group or rule; for a rule that covers YAML comments above and inside it, a
// comment after a value and PromQL comments inside a multi-line expr; for a group, the comments
// above its name and before its first rule, which mark every rule of the group.
func (fn *fileNodes) marked(lines []string, start int) bool {
	end := len(lines)
	if i := sort.SearchInts(fn.starts, start+1); i < len(fn.starts) {
		end = commentsAbove(lines, fn.starts[i]) - 1
	}
	for l := commentsAbove(lines, start); l <= end && l <= len(lines); l++ {
		text := lines[l-1]
		if m := strings.Index(text, FleetWideMarker); m >= 0 {
			if h := strings.IndexByte(text, '#'); h >= 0 && h < m {
				return true
			}
		}
	}
	return false
}

// commentsAbove returns the first line of the block of comment lines just above line (1-based),
// or line itself when there are none.
func commentsAbove(lines []string, line int) int {
	for line > 1 && strings.HasPrefix(strings.TrimSpace(lines[line-2]), "#") {
		line--
	}
	return line
}

var (
	lineColRE  = regexp.MustCompile(`^(\d+):\d+: (?:\d+:\d+: )?`)
	groupErrRE = regexp.MustCompile(`^\d+:\d+: (?:groupname: "(.*)"( is repeated)|Groupname must not be empty)`)
	yamlLineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)
)

// problems formats an error of rulefmt.Parse as "file:line: message" lines.
func problems(file string, err error, nodes *fileNodes) []string {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		out := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			out = append(out, located(file, e, 0))
		}
		return out
	}
	line := 0
	var re *rulefmt.Error
	switch {
	case nodes == nil:
	case errors.As(err, &re):
		line = nodes.ruleLine(re.Group, re.Rule)
	default:
		// rulefmt reports the groups' own errors at line 0: it reads the group's position from a
		// node that is never filled.
		if m := groupErrRE.FindStringSubmatch(err.Error()); m != nil {
			line = nodes.groupLine(m[1], m[2] != "")
		}
	}
	return []string{located(file, err.Error(), line)}
}

// located puts the line the message starts with (rulefmt's "12:5: " or YAML's "line 12: ") in
// front as "file:12: "; fallback is the line to use when the message names none.
func located(file, msg string, fallback int) string {
	if m := lineColRE.FindStringSubmatch(msg); m != nil {
		if m[1] != "0" || fallback == 0 {
			return fmt.Sprintf("%s:%s: %s", file, m[1], msg[len(m[0]):])
		}
		msg = msg[len(m[0]):]
	}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("%s:%s: %s", file, m[1], msg[len(m[0]):])
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if fallback > 0 {
		return file + ":" + strconv.Itoa(fallback) + ": " + msg
	}
	return file + ": " + msg
}

// groupLine is the line of the first group named name, or of the second when repeated is set.
func (fn *fileNodes) groupLine(name string, repeated bool) int {
	for _, g := range fn.groups {
		if g.name != name {
			continue
		}
		if !repeated {
			return g.line
		}
		repeated = false
	}
	return 0
}

// ruleLine is the line of rule number n (1-based) of the group named group, or 0.
func (fn *fileNodes) ruleLine(group string, n int) int {
	for _, g := range fn.groups {
		if g.name == group && n >= 1 && n <= len(g.rules) {
			return g.rules[n-1].line
		}
	}
	return 0
}

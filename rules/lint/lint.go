package lint

import (
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/parser/posrange"
)

// ClusterLabel is the label that names a series' cluster on the view.
const ClusterLabel = "cluster"

// FleetWideMarker, in a comment of a rule, says the rule compares clusters on purpose.
const FleetWideMarker = "fleetwatch:fleet-wide"

// Check names one of the checks.
type Check string

// The checks. Aggregation and Join find rules that mix clusters; FleetWideMarker turns them off.
const (
	CheckAggregation Check = "aggregation"
	CheckJoin        Check = "join"
	CheckSelector    Check = "selector"
)

// CrossCluster reports whether issues of check c mean the expression mixes clusters.
func (c Check) CrossCluster() bool { return c == CheckAggregation || c == CheckJoin }

// Issue is one problem in a PromQL expression.
type Issue struct {
	Check Check
	// Pos is where in the expression the problem is: the aggregation, the operator of the
	// binary operation, or the selector.
	Pos     posrange.Pos
	Message string
}

// Expr checks a parsed PromQL expression and returns its issues in the order they appear.
// The expression is the rule's expr as written: expr.String() would lose the positions.
func Expr(expr parser.Expr, src string) []Issue {
	var issues []Issue
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.AggregateExpr:
			if is, ok := checkAggregation(n); ok {
				issues = append(issues, is)
			}
		case *parser.BinaryExpr:
			if is, ok := checkJoin(n, src); ok {
				issues = append(issues, is)
			}
		case *parser.VectorSelector:
			if is, ok := checkSelector(n); ok {
				issues = append(issues, is)
			}
		}
		return nil
	})
	slices.SortStableFunc(issues, func(a, b Issue) int { return int(a.Pos - b.Pos) })
	return issues
}

// selects reports whether the subtree reads any series. An aggregation or a join over numbers
// and vector(...) alone has no cluster label to lose.
func selects(n parser.Node) bool {
	found := false
	parser.Inspect(n, func(node parser.Node, _ []parser.Node) error {
		if _, ok := node.(*parser.VectorSelector); ok {
			found = true
		}
		return nil
	})
	return found
}

func checkAggregation(n *parser.AggregateExpr) (Issue, bool) {
	if !selects(n.Expr) {
		return Issue{}, false
	}
	hasCluster := slices.Contains(n.Grouping, ClusterLabel)
	if n.Without != hasCluster {
		// by (..., cluster, ...) or without (...) that keeps cluster.
		return Issue{}, false
	}
	op := n.Op.String()
	var what, fix string
	switch {
	case n.Without:
		what = fmt.Sprintf("%q removes cluster", op+" without ("+strings.Join(n.Grouping, ", ")+")")
		fix = "remove cluster from without (...)"
	case len(n.Grouping) == 0:
		what = fmt.Sprintf("%q has no by (cluster, ...)", op)
		fix = "aggregate by (cluster, ...)"
	default:
		what = fmt.Sprintf("%q leaves out cluster", op+" by ("+strings.Join(n.Grouping, ", ")+")")
		fix = "add cluster to by (...)"
	}
	var msg string
	switch n.Op {
	case parser.TOPK, parser.BOTTOMK, parser.LIMITK, parser.LIMIT_RATIO:
		// These keep the labels of the series they pick, but pick them among all clusters.
		msg = what + ", so it picks series across clusters; " + fix
	default:
		msg = what + ", so it aggregates series of different clusters; " + fix
	}
	return Issue{Check: CheckAggregation, Pos: n.PosRange.Start, Message: msg}, true
}

func checkJoin(n *parser.BinaryExpr, src string) (Issue, bool) {
	vm := n.VectorMatching
	if vm == nil || n.LHS.Type() != parser.ValueTypeVector || n.RHS.Type() != parser.ValueTypeVector {
		return Issue{}, false
	}
	// A side that reads no series (vector(1)) has no cluster label to match on.
	if !selects(n.LHS) || !selects(n.RHS) {
		return Issue{}, false
	}
	hasCluster := slices.Contains(vm.MatchingLabels, ClusterLabel)
	if vm.On == hasCluster {
		// on (..., cluster, ...), or ignoring (...) without cluster, or no modifier (all labels).
		return Issue{}, false
	}
	op := n.Op.String()
	pos := operatorPos(n, src)
	if vm.On {
		return Issue{Check: CheckJoin, Pos: pos, Message: fmt.Sprintf(
			"%q leaves out cluster, so it matches series of different clusters; add cluster to on (...)",
			op+" on ("+strings.Join(vm.MatchingLabels, ", ")+")")}, true
	}
	return Issue{Check: CheckJoin, Pos: pos, Message: fmt.Sprintf(
		"%q ignores cluster, so it matches series of different clusters; remove cluster from ignoring (...)",
		op+" ignoring ("+strings.Join(vm.MatchingLabels, ", ")+")")}, true
}

// operatorPos returns where the operator of n is in src: the first character after the
// left-hand side that is neither space nor part of a comment. A multi-line join is reported at
// the line of its operator, not at the first line of its left-hand side.
func operatorPos(n *parser.BinaryExpr, src string) posrange.Pos {
	start, end := n.LHS.PositionRange().End, n.RHS.PositionRange().Start
	if start < 0 || end > posrange.Pos(len(src)) || start >= end {
		return n.PositionRange().Start
	}
	gap := src[start:end]
	for i := 0; i < len(gap); i++ {
		switch c := gap[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ')':
			// A closing parenthesis of the left-hand side is not the operator.
		case c == '#':
			nl := strings.IndexByte(gap[i:], '\n')
			if nl < 0 {
				return n.PositionRange().Start
			}
			i += nl
		default:
			return start + posrange.Pos(i)
		}
	}
	return n.PositionRange().Start
}

func checkSelector(n *parser.VectorSelector) (Issue, bool) {
	if n.Name != "" {
		return Issue{}, false
	}
	for _, m := range n.LabelMatchers {
		switch {
		case m.Name == labels.MetricName && m.Type == labels.MatchEqual && m.Value != "":
			return Issue{}, false
		case m.Name == "job" && (m.Type == labels.MatchEqual || m.Type == labels.MatchRegexp) && !m.Matches(""):
			return Issue{}, false
		}
	}
	return Issue{Check: CheckSelector, Pos: n.PosRange.Start, Message: fmt.Sprintf(
		"selector %s has neither a metric name nor a job matcher, so it reads series of every job in every cluster; name the metric or add job=\"...\"",
		n.String())}, true
}

// MetricNames returns the metric names expr reads by name, in order of appearance, without
// duplicates: the names of its selectors and their __name__="..." matchers.
func MetricNames(expr parser.Expr) []string {
	var names []string
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name != "" && !slices.Contains(names, name) {
			names = append(names, name)
		}
		return nil
	})
	return names
}

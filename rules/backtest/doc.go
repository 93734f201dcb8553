// Package backtest replays alerting and recording rules over the history stored in a
// fleetwatch (Prometheus) TSDB and reports, per alert rule and cluster, how often the rules would
// have fired, for how long, and how often an alert went pending without ever firing: an
// estimate of the noise a threshold makes before it is rolled out.
//
// It drives Prometheus's own rules engine: the groups are built with rules.NewGroup and
// evaluated with Group.Eval at every step from the start to the end of the range, as promtool's
// rule unit tests do, and alert states are read from each AlertingRule after every step. The
// history is opened read only (tsdb.OpenDBReadOnly), which works while fleetwatch runs on the
// same directory. What the recording rules record goes into a temporary TSDB that later rules
// read merged with the history; the series those rules recorded when fleetwatch ran them live
// are hidden, so a changed rule is never mixed with its old output.
//
// Evaluating an instant query per rule and step reads every selected series again at every
// step, which makes a day of a real fleet take many minutes. Unless the rules depend on each
// other in a way only a step-by-step evaluation reproduces, each rule's expression is therefore
// evaluated ahead, one range query per rule and hour of steps, and Group.Eval is answered from
// those results; the reports are the same (TestStepwiseAgrees), and Options.Stepwise forces the
// slow way. The query engine is the view's: Thanos's, with Prometheus's as the fallback, or
// Prometheus's alone.
//
// The package owns the replay and its report. It never writes to the history and sends no
// alerts.
package backtest

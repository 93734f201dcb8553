package dashboards

// The rule pack's recorded series and alerts the dashboards read and color by are rules/pack's
// exported names (pack.Record*, pack.Alert*), never typed here: the pack's tests fail when a
// name and the templates disagree, and this package's tests fail when a view dashboard reads a
// recorded series the pack does not record or colors by an alert it does not define, so a rule
// renamed in the pack cannot leave a dashboard silently empty.

// cf is the cluster filter every selector of a per-cluster dashboard carries.
const cf = `cluster=~"$cluster"`

// jf is the job filter of every selector on the Prometheus that scrapes fleetwatch.
const jf = `job=~"$job"`

package schedule

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

type reasonKind uint8

const (
	reasonFailed reasonKind = iota + 1
	reasonExcluded
	reasonNotListed
	reasonNeverIngested
	reasonStale
	reasonNoCapacity
	reasonNotReady
	reasonIncident
	reasonCompliance
	reasonNotAllowed
	reasonLatencyUnknown
	reasonLatencyAbove
	reasonCapacity
	reasonText // read back from JSON
)

// Reason is one hard constraint a cluster fails. It keeps the facts (names and numbers) and
// puts them into words only when shown (String, JSON), so that deciding over a thousand
// clusters does not format a thousand sentences nobody may read.
type Reason struct {
	kind   reasonKind
	n1, n2 int32
	s      string
	f1, f2 float64
	ref    *reasonRef   // what the decision asked, shared by its reasons
	inc    *IncidentRef // in the snapshot, which never changes
}

// reasonRef is what every reason of one decision shares.
type reasonRef struct {
	ceiling     float64
	cpu, memory float64
	constraints *Constraints
}

var allowedField = [...]string{"region", "provider", "tier"}

func (r *reasonRef) allowed(field int) []string {
	switch field {
	case 0:
		return r.constraints.Regions
	case 1:
		return r.constraints.Providers
	default:
		return r.constraints.Tiers
	}
}

// String says the reason in words.
func (r Reason) String() string {
	switch r.kind {
	case reasonText:
		return r.s
	case reasonFailed:
		return "fails in this what-if"
	case reasonExcluded:
		return "excluded by constraints.exclude_clusters"
	case reasonNotListed:
		return "not in constraints.clusters"
	case reasonNeverIngested:
		return "stale: no data received from it"
	case reasonStale:
		return fmt.Sprintf("stale: last data %s ago (placement needs data newer than %s)",
			time.Duration(r.f1).Round(100*time.Millisecond), time.Duration(r.f2))
	case reasonNoCapacity:
		return "no allocatable CPU and memory in the view (cluster:kube_node_status_allocatable_*:sum)"
	case reasonNotReady:
		return fmt.Sprintf("unhealthy: %s of nodes Ready (minimum %s)", pct(r.f1), pct(r.f2))
	case reasonIncident:
		return fmt.Sprintf("unhealthy: open critical %s incident %s: %s", r.inc.Scope, r.inc.ID, r.inc.Title)
	case reasonCompliance:
		return fmt.Sprintf("lacks compliance tag %q", r.s)
	case reasonNotAllowed:
		return fmt.Sprintf("%s %q not in %s", allowedField[r.n1], r.s, strings.Join(r.ref.allowed(int(r.n1)), ", "))
	case reasonLatencyUnknown:
		return fmt.Sprintf("latency to %s unknown", r.s)
	case reasonLatencyAbove:
		return fmt.Sprintf("latency to %s %gms above max_latency %s", r.s, r.f1, time.Duration(r.f2))
	case reasonCapacity:
		return fmt.Sprintf("fits %d of %d replicas below the %s ceiling (free %s CPU cores, %s memory; one replica requests %s cores, %s)",
			r.n1, r.n2, pct(r.ref.ceiling), cores(r.f1), bytesIEC(r.f2), cores(r.ref.cpu), bytesIEC(r.ref.memory))
	}
	return "unknown reason"
}

// MarshalJSON writes the reason in words.
func (r Reason) MarshalJSON() ([]byte, error) { return json.Marshal(r.String()) }

// UnmarshalJSON reads a reason back as its words (API clients).
func (r *Reason) UnmarshalJSON(b []byte) error {
	*r = Reason{kind: reasonText}
	return json.Unmarshal(b, &r.s)
}

// Reasons are the constraints a cluster fails.
type Reasons []Reason

// Strings says each reason in words.
func (rs Reasons) Strings() []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

// String joins the reasons with "; ".
func (rs Reasons) String() string { return strings.Join(rs.Strings(), "; ") }

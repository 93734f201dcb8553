package access

import (
	"context"
	"slices"
	"strings"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// Role is a set of permissions an identity holds.
type Role string

// The roles. Operate and admin include read: whoever may acknowledge an incident or reload the
// configuration may also look at what they act on.
const (
	// RoleRead: PromQL, rules, alerts, incidents, placement answers, /metrics.
	RoleRead Role = config.RoleRead
	// RoleOperate: acknowledge and resolve incidents (later: approve remediation).
	RoleOperate Role = config.RoleOperate
	// RoleAdmin: configuration reload, shutdown (with --web.enable-lifecycle) and pprof.
	RoleAdmin Role = config.RoleAdmin
	// RoleIngest is only ever held by a member cluster's remote-write credentials: remote-write
	// and alerts in, nothing else.
	RoleIngest Role = "ingest"
)

// Kind says how an identity authenticated.
type Kind string

// Kinds of identity.
const (
	KindAnonymous Kind = "anonymous"
	KindUser      Kind = "user"
	KindCluster   Kind = "cluster"
)

// Identity is who sent a request, as the access layer established it. The zero Identity is
// anonymous with no roles.
type Identity struct {
	// Name is the identity's name (a user from access.identities, or the cluster's name for
	// a cluster's remote-write credentials); empty for anonymous.
	Name  string
	Kind  Kind
	roles []Role
	// clusters is the team scope, sorted; meaningful only when scoped is set.
	clusters []string
	scoped   bool
}

// NewIdentity returns an identity holding roles. A nil scope means every cluster; a non-nil
// one (even empty) limits it to those clusters.
func NewIdentity(name string, kind Kind, roles []Role, scope []string) Identity {
	id := Identity{Name: name, Kind: kind, roles: slices.Clone(roles)}
	if scope != nil {
		id.scoped = true
		id.clusters = slices.Clone(scope)
		slices.Sort(id.clusters)
		id.clusters = slices.Compact(id.clusters)
	}
	return id
}

// Has says whether the identity holds role r. Operate and admin include read.
func (id Identity) Has(r Role) bool {
	for _, have := range id.roles {
		if have == r || (r == RoleRead && (have == RoleOperate || have == RoleAdmin)) {
			return true
		}
	}
	return false
}

// Scoped says whether the identity sees only some clusters.
func (id Identity) Scoped() bool { return id.scoped }

// AllowsCluster says whether the identity may see data of the named cluster.
func (id Identity) AllowsCluster(cluster string) bool {
	if !id.scoped {
		return true
	}
	_, ok := slices.BinarySearch(id.clusters, cluster)
	return ok
}

// AllowsAny says whether the identity may see anything that touches one of clusters: a team
// sees an incident when one of its clusters is affected. Nothing scoped sees an item that
// names no cluster (a fleet-wide aggregate says something about every cluster).
func (id Identity) AllowsAny(clusters []string) bool {
	if !id.scoped {
		return true
	}
	for _, c := range clusters {
		if id.AllowsCluster(c) {
			return true
		}
	}
	return false
}

// String is the name to record as the actor of an action: "alice", or "cluster/eu-1".
func (id Identity) String() string {
	switch id.Kind {
	case KindCluster:
		return "cluster/" + id.Name
	case KindUser:
		return id.Name
	default:
		return string(KindAnonymous)
	}
}

type ctxKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity the access layer put into ctx. Without one (a handler
// called directly, as in unit tests) it answers an unscoped, anonymous identity with ok false:
// handlers that act must refuse then.
func FromContext(ctx context.Context) (id Identity, ok bool) {
	id, ok = ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// rolesString joins roles for messages.
func rolesString(rs []Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

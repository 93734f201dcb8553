package access

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/crypto/bcrypt"
)

// Challenge is the WWW-Authenticate value sent with a 401: basic auth or a bearer token.
const Challenge = `Bearer realm="fleetwatch", Basic realm="fleetwatch"`

// ClusterAuthenticator tells which member cluster's remote-write credentials a request
// carries (internal/clusterauth.Table).
type ClusterAuthenticator interface {
	Authenticate(*http.Request) (cluster string, ok bool)
}

type noClusters struct{}

func (noClusters) Authenticate(*http.Request) (string, bool) { return "", false }

// Refusal reasons, the `reason` label of fleetwatch_http_requests_refused_total.
const (
	// ReasonUnauthenticated: no or wrong credentials (401).
	ReasonUnauthenticated = "unauthenticated"
	// ReasonForbidden: authenticated, but without the role the endpoint needs (403).
	ReasonForbidden = "forbidden"
	// ReasonNoAccessConfig: a state-changing endpoint while no identity is configured (403).
	ReasonNoAccessConfig = "no_access_config"
	// ReasonLifecycleDisabled: /-/reload or /-/quit without --web.enable-lifecycle (403).
	ReasonLifecycleDisabled = "lifecycle_disabled"
	// ReasonScope: an endpoint a team-scoped identity may not use, or a request its scope
	// cannot be enforced on (403).
	ReasonScope = "scope"
	// ReasonCrossOrigin: a browser sent a state-changing request from another site (what a
	// forged form or script would do with the user's saved credentials).
	ReasonCrossOrigin = "cross_origin"
)

// EndpointWrite is the endpoint name of the remote-write receiver, as refusals of a cluster's
// credentials are counted (the fleetwatch dashboard reads it).
const EndpointWrite = "write"

// SettingIdentities is the setting that turns identities on; refusals in open mode name it.
const SettingIdentities = "access.identities in fleetwatch.yml"

// User is one identity of fleetwatch.yml, resolved: its roles, its token and its scope (nil:
// every cluster).
type User struct {
	Name        string
	Roles       []Role
	BearerToken string
	Scope       []string
}

// Settings are what the guard enforces; cmd/fleetwatch builds them from fleetwatch.yml,
// --web.config.file and --web.enable-lifecycle, and swaps them as a whole on reload.
type Settings struct {
	Users []User
	// AnonymousRoles are what a request without credentials gets once identities exist.
	AnonymousRoles []Role
	// Clusters authenticates member clusters' remote-write credentials (ingest only); nil:
	// no cluster.
	Clusters ClusterAuthenticator
	// Web holds the basic-auth users of --web.config.file (nil: none).
	Web *WebConfig
	// Lifecycle is --web.enable-lifecycle.
	Lifecycle bool
}

// state is the compiled, immutable form of Settings.
type state struct {
	open      bool // no identity anywhere: reads open, state changes refused
	byToken   map[[sha256.Size]byte]*User
	byName    map[string]*User
	webUsers  map[string]string
	anonymous Identity
	clusters  ClusterAuthenticator
	lifecycle bool
	headers   map[string]string
}

// Guard is the access layer: wrap the whole mux with Handler.
type Guard struct {
	logger    *slog.Logger
	routes    *routes
	st        atomic.Pointer[state]
	refused   *prometheus.CounterVec
	warnOnce  sync.Once
	bcryptMu  sync.Mutex // bcrypt is CPU-heavy: one comparison at a time, as the toolkit does
	authCache sync.Map   // sha256(user, hash, password) -> bool; bounded by cacheLimit
	cacheLen  atomic.Int64
	// crossOrigin refuses state-changing browser requests from other sites (by their
	// Sec-Fetch-Site and Origin headers); API clients that send neither pass.
	crossOrigin *http.CrossOriginProtection
}

// cacheLimit bounds the remembered basic-auth outcomes; past it the cache starts over.
const cacheLimit = 1024

// GuardOptions configure a Guard.
type GuardOptions struct {
	// Endpoints are the routes of the HTTP surface. A request that matches none needs the
	// read role and is refused to team-scoped identities.
	Endpoints  []Endpoint
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// NewGuard returns a guard over the endpoints. Until Apply is called it has no identities
// (open mode: reads allowed, state changes refused).
func NewGuard(o GuardOptions) (*Guard, error) {
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rt, err := newRoutes(o.Endpoints)
	if err != nil {
		return nil, err
	}
	reg := o.Registerer
	g := &Guard{
		logger: logger, routes: rt, crossOrigin: http.NewCrossOriginProtection(),
		refused: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Name: "fleetwatch_http_requests_refused_total",
			Help: "HTTP requests refused by the access layer, by endpoint and reason (unauthenticated, forbidden, no_access_config, lifecycle_disabled, scope).",
		}, []string{"endpoint", "reason"}),
	}
	st, _ := compile(Settings{}) // cannot fail: no users
	g.st.Store(st)
	return g, nil
}

// Check validates settings without applying them.
func Check(s Settings) error {
	_, err := compile(s)
	return err
}

func compile(s Settings) (*state, error) {
	st := &state{
		byToken: map[[sha256.Size]byte]*User{}, byName: map[string]*User{}, webUsers: map[string]string{},
		clusters: s.Clusters, lifecycle: s.Lifecycle,
	}
	if st.clusters == nil {
		st.clusters = noClusters{}
	}
	if s.Web != nil && s.Web.Users != nil {
		st.webUsers, st.headers = s.Web.Users, s.Web.Headers
	}
	for i := range s.Users {
		u := &s.Users[i]
		if _, dup := st.byName[u.Name]; dup {
			return nil, fmt.Errorf("access: identity %q defined more than once", u.Name)
		}
		st.byName[u.Name] = u
		if u.BearerToken != "" {
			st.byToken[sha256.Sum256([]byte(u.BearerToken))] = u
		}
	}
	st.open = len(s.Users) == 0 && len(st.webUsers) == 0
	if st.open {
		st.anonymous = NewIdentity("", KindAnonymous, []Role{RoleRead}, nil)
	} else {
		st.anonymous = NewIdentity("", KindAnonymous, s.AnonymousRoles, nil)
	}
	return st, nil
}

// Apply switches to new settings, or leaves the running ones when they are invalid.
func (g *Guard) Apply(s Settings) error {
	st, err := compile(s)
	if err != nil {
		return err
	}
	g.st.Store(st)
	g.authCache.Clear()
	g.cacheLen.Store(0)
	if st.open {
		g.warnOnce.Do(func() {
			g.logger.Warn("no identities configured: reads are open to anyone who can reach fleetwatch, and every state-changing endpoint answers 403 until "+SettingIdentities+" (and --web.config.file for TLS and basic auth) is set",
				"setting", SettingIdentities)
		})
	}
	return nil
}

// RefusedCounter is the refusal counter of an endpoint and reason, for tests.
func (g *Guard) RefusedCounter(endpoint, reason string) prometheus.Counter {
	return g.refused.WithLabelValues(endpoint, reason)
}

// errBadCredentials is a request whose credentials match nothing.
var errBadCredentials = errors.New("the credentials match no identity")

// authenticate establishes who sent r.
func (g *Guard) authenticate(st *state, r *http.Request) (Identity, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		if user, pass, ok := r.BasicAuth(); ok {
			if cluster, ok := st.clusters.Authenticate(r); ok {
				return NewIdentity(cluster, KindCluster, []Role{RoleIngest}, []string{cluster}), nil
			}
			if hash, ok := st.webUsers[user]; ok && g.checkPassword(user, hash, pass) {
				if u := st.byName[user]; u != nil {
					return NewIdentity(u.Name, KindUser, u.Roles, u.Scope), nil
				}
				// A web-config user with no entry in access.identities reads, as it would in
				// Prometheus; operate and admin must be given explicitly.
				return NewIdentity(user, KindUser, []Role{RoleRead}, nil), nil
			}
			if _, ok := st.webUsers[user]; !ok {
				// Spend the time a bcrypt comparison takes, so timing does not tell which
				// users exist.
				g.checkPassword(user, unknownUserHash, pass)
			}
			return Identity{}, errBadCredentials
		}
		const bearer = "Bearer "
		if len(h) > len(bearer) && strings.EqualFold(h[:len(bearer)], bearer) {
			if cluster, ok := st.clusters.Authenticate(r); ok {
				return NewIdentity(cluster, KindCluster, []Role{RoleIngest}, []string{cluster}), nil
			}
			sum := sha256.Sum256([]byte(h[len(bearer):]))
			if u := st.byToken[sum]; u != nil {
				return NewIdentity(u.Name, KindUser, u.Roles, u.Scope), nil
			}
		}
		return Identity{}, errBadCredentials
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.PeerCertificates) > 0 {
		if u := st.byName[r.TLS.PeerCertificates[0].Subject.CommonName]; u != nil {
			return NewIdentity(u.Name, KindUser, u.Roles, u.Scope), nil
		}
	}
	return st.anonymous, nil
}

// unknownUserHash is bcrypt("fakepassword"), the toolkit's stand-in for unknown users.
const unknownUserHash = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"

// checkPassword compares a basic-auth password with a bcrypt hash, remembering the outcome
// (keyed by a digest of user, hash and password, never the password itself) so that a client
// that sends the same credentials with every request pays for bcrypt once.
func (g *Guard) checkPassword(user, hash, pass string) bool {
	h := sha256.New()
	for _, s := range []string{user, hash, pass} {
		h.Write([]byte(hex.EncodeToString([]byte(s))))
		h.Write([]byte{':'})
	}
	var key [sha256.Size]byte
	copy(key[:], h.Sum(nil))
	if ok, found := g.authCache.Load(key); found {
		return ok.(bool)
	}
	g.bcryptMu.Lock()
	err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pass))
	g.bcryptMu.Unlock()
	ok := err == nil
	if g.cacheLen.Add(1) > cacheLimit {
		g.authCache.Clear()
		g.cacheLen.Store(1)
	}
	g.authCache.Store(key, ok)
	return ok
}

// Handler wraps next: every request is authenticated, checked against the endpoint's needs
// (its Endpoint), scoped when the identity is a team's, and carries its identity in the context.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := g.st.Load()
		for k, v := range st.headers {
			w.Header().Set(k, v)
		}
		ep := g.routes.classify(r)
		if ep.Need == "" {
			next.ServeHTTP(w, r)
			return
		}
		if err := g.crossOrigin.Check(r); err != nil {
			g.refuse(w, r, ep, http.StatusForbidden, ReasonCrossOrigin, err.Error()+": fleetwatch takes changes from its own pages and from API clients only")
			return
		}
		id, err := g.authenticate(st, r)
		if err != nil {
			g.refuse(w, r, ep, http.StatusUnauthorized, ReasonUnauthenticated, err.Error())
			return
		}
		if ep.Need == RoleIngest {
			switch {
			case id.Kind == KindCluster:
			case id.Kind == KindAnonymous:
				g.refuse(w, r, ep, http.StatusUnauthorized, ReasonUnauthenticated, "a member cluster's remote-write credentials are required")
				return
			default:
				g.refuse(w, r, ep, http.StatusForbidden, ReasonForbidden, fmt.Sprintf("%s is not a member cluster: only a cluster's remote-write credentials may send data", id))
				return
			}
		} else if !id.Has(ep.Need) {
			switch {
			case st.open && ep.Need != RoleRead:
				g.refuse(w, r, ep, http.StatusForbidden, ReasonNoAccessConfig,
					fmt.Sprintf("%s needs an identity with the %s role; no identity is configured: set %s (and --web.config.file for TLS and basic auth)", ep.Name, ep.Need, SettingIdentities))
			case id.Kind == KindAnonymous:
				g.refuse(w, r, ep, http.StatusUnauthorized, ReasonUnauthenticated, fmt.Sprintf("%s needs an identity with the %s role: send credentials", ep.Name, ep.Need))
			default:
				g.refuse(w, r, ep, http.StatusForbidden, ReasonForbidden, fmt.Sprintf("%s needs the %s role; %s has %s", ep.Name, ep.Need, id, rolesString(id.roles)))
			}
			return
		}
		if ep.Lifecycle && !st.lifecycle {
			g.refuse(w, r, ep, http.StatusForbidden, ReasonLifecycleDisabled, "Lifecycle API is not enabled: start fleetwatch with --web.enable-lifecycle")
			return
		}
		r = r.WithContext(WithIdentity(r.Context(), id))
		if id.Scoped() && id.Kind == KindUser {
			if err := g.scopeRequest(ep, id, w, r, next); err != nil {
				g.refuse(w, r, ep, http.StatusForbidden, ReasonScope, err.Error())
			}
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers a refusal and counts it.
func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, ep Endpoint, code int, reason, msg string) {
	g.refused.WithLabelValues(ep.Name, reason).Inc()
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", Challenge)
	}
	if strings.HasPrefix(r.URL.Path, "/api/") || r.URL.Path == "/federate" {
		writeError(w, code, reason, msg)
		return
	}
	http.Error(w, msg, code)
}

// writeError answers in the Prometheus API's error envelope.
func writeError(w http.ResponseWriter, code int, typ, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": "error", "errorType": typ, "error": msg})
}

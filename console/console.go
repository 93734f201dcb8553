package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/storage"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/access"
	"github.com/fleetwatch/fleetwatch/internal/config"
	"github.com/fleetwatch/fleetwatch/remediate"
	"github.com/fleetwatch/fleetwatch/schedule"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// QueryFunc evaluates a PromQL expression at ts over the global view and returns its value
// whatever its type (vector, matrix, scalar or string): /graph shows each.
type QueryFunc func(ctx context.Context, q string, ts time.Time) (parser.Value, error)

// RangeQueryFunc evaluates a PromQL expression from start to end every step.
type RangeQueryFunc func(ctx context.Context, q string, start, end time.Time, step time.Duration) (promql.Matrix, error)

// EngineQueries returns the console's query seams over a PromQL engine and what it reads
// (query.View is both), as rules.EngineQueryFunc does for the rules.
func EngineQueries(engine promql.QueryEngine, q storage.Queryable) (QueryFunc, RangeQueryFunc) {
	instant := func(ctx context.Context, qs string, ts time.Time) (parser.Value, error) {
		qry, err := engine.NewInstantQuery(ctx, q, nil, qs, ts)
		res, err := exec(ctx, qry, err)
		if err != nil {
			return nil, err
		}
		return res.Value, nil
	}
	rng := func(ctx context.Context, qs string, start, end time.Time, step time.Duration) (promql.Matrix, error) {
		qry, err := engine.NewRangeQuery(ctx, q, nil, qs, start, end, step)
		res, err := exec(ctx, qry, err)
		if err != nil {
			return nil, err
		}
		return res.Matrix()
	}
	return instant, rng
}

// exec runs a query its engine made (or returns the error making it gave). It does not Close
// the query: Prometheus's engine puts a range query's result slices back in its pools on
// Close, and the page is rendered from them after this returns (rules.EngineQueryFunc does
// not close its queries either).
func exec(ctx context.Context, qry promql.Query, err error) (*promql.Result, error) {
	if err != nil {
		return nil, err
	}
	res := qry.Exec(ctx)
	return res, res.Err
}

// Options configure a Console. The sources are fleetwatch's components or functions over
// them, so that the console neither wires nor owns any of them.
type Options struct {
	// Query and Range read the global view (EngineQueries builds both). Required.
	Query QueryFunc
	Range RangeQueryFunc
	// Config returns the configuration in force: the clusters and their labels, placement's
	// weights, remediation's budget. Required.
	Config func() *config.Config
	// Incidents is the correlation engine (active incidents) and IncidentStore where every
	// incident, resolved ones too, is kept. Nil: the console shows no incidents.
	Incidents     *correlate.Engine
	IncidentStore *correlate.Store
	// Remediations is remediation's store and Remediator its engine (what is paused). Nil:
	// the console shows no remediations.
	Remediations *remediate.Store
	Remediator   *remediate.Engine
	// Schedule is placement and what-if; ScheduleEnabled says whether it runs (nil: always).
	Schedule        *schedule.Service
	ScheduleEnabled func() bool
	// GrafanaURL is the base URL of the Grafana that has fleetwatch's dashboards (dashboards/);
	// empty: no links to Grafana.
	GrafanaURL string
	Logger     *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Console is fleetwatch's web console: server-rendered pages over the view, the incidents,
// remediation and placement, for the identities the access layer in front established.
type Console struct {
	o      Options
	logger *slog.Logger
	pages  map[string]*template.Template
	static fs.FS
}

// The pages, each a template of templates/ rendered inside layout.html.
var pageNames = []string{"fleet", "cluster", "incidents", "incident", "remediations", "remediation", "whatif", "graph", "error"}

// New checks the options and parses the templates.
func New(o Options) (*Console, error) {
	if o.Query == nil || o.Range == nil {
		return nil, errors.New("console: Options.Query and Options.Range are required")
	}
	if o.Config == nil {
		return nil, errors.New("console: Options.Config is required")
	}
	if o.GrafanaURL != "" {
		u, err := url.Parse(o.GrafanaURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("console: Grafana URL %q is not an http(s) URL", o.GrafanaURL)
		}
		o.GrafanaURL = strings.TrimRight(o.GrafanaURL, "/")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Console{o: o, logger: o.Logger, pages: map[string]*template.Template{}}
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	for _, p := range pageNames {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("console: %w", err)
		}
		c.pages[p] = t
	}
	if c.static, err = fs.Sub(staticFS, "static"); err != nil {
		return nil, err
	}
	return c, nil
}

// Routes are the console's pages, as http.ServeMux patterns: fleetwatch lists each among
// its endpoints (read role; team identities are held to their clusters by the pages).
var Routes = []string{
	"GET /{$}", "GET /static/", "GET /graph", "GET /clusters/{name}",
	"GET /incidents", "GET /incidents/{id}", "GET /remediations", "GET /remediations/{id}", "GET /whatif",
}

// Handler serves the console. Anything it has no page for is a 404 page, so it can be mounted
// at "/" behind the API's routes.
func (c *Console) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", c.serveFleet)
	mux.Handle("GET /static/", c.staticHandler())
	mux.HandleFunc("GET /graph", c.serveGraph)
	mux.HandleFunc("GET /clusters/{name}", c.serveCluster)
	mux.HandleFunc("GET /incidents", c.serveIncidents)
	mux.HandleFunc("GET /incidents/{id}", c.serveIncident)
	mux.HandleFunc("GET /remediations", c.serveRemediations)
	mux.HandleFunc("GET /remediations/{id}", c.serveRemediation)
	mux.HandleFunc("GET /whatif", c.serveWhatIf)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusNotFound, "No page here", fmt.Errorf("%s is not a page of fleetwatch", r.URL.Path))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Everything the pages use comes from fleetwatch itself; the policy makes sure a
		// page can never load (or send data to) anything else.
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		mux.ServeHTTP(w, r)
	})
}

// staticHandler serves the embedded CSS and JavaScript. They change only with the binary, so
// browsers may keep them for a while.
func (c *Console) staticHandler() http.Handler {
	files := http.StripPrefix("/static/", http.FileServerFS(c.static))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/static/")
		if name == "" || strings.HasSuffix(name, "/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})
}

// identity is the caller as the access layer established it. Without one (the console
// called directly, in tests) it is the unscoped anonymous identity with no roles: it sees
// everything and may act on nothing, which is what the API would let it do.
func identity(r *http.Request) access.Identity {
	id, _ := access.FromContext(r.Context())
	return id
}

// page is what every page template receives.
type page struct {
	Title string
	// Nav is the section of the navigation to mark as the current one.
	Nav      string
	Identity string
	// Data is the page's own content.
	Data any
}

// render writes a page with status code.
func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, name, title, nav string, data any) {
	var buf strings.Builder
	p := page{Title: title, Nav: nav, Identity: identity(r).String(), Data: data}
	if err := c.pages[name].ExecuteTemplate(&buf, "layout.html", p); err != nil {
		c.logger.Error("rendering a console page", "page", name, "err", err)
		http.Error(w, "rendering the page failed: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(buf.String()))
}

// errorPage is the content of the error page.
type errorPage struct {
	Code    int
	Heading string
	Message string
}

// fail renders the error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, code int, heading string, err error) {
	c.render(w, r, code, "error", heading, "", errorPage{Code: code, Heading: heading, Message: err.Error()})
}

// notFound answers a page about something unknown, or not the caller's: the two are answered
// alike, so a team learns nothing of another team's clusters, incidents or remediations.
func (c *Console) notFound(w http.ResponseWriter, r *http.Request, what string) {
	c.fail(w, r, http.StatusNotFound, "Not found", fmt.Errorf("%s is not known", what))
}

// clusters returns the configured clusters the identity may see, in configuration order.
func (c *Console) clusters(id access.Identity) []*config.ClusterConfig {
	cfg := c.o.Config()
	if cfg == nil {
		return nil
	}
	var out []*config.ClusterConfig
	for _, cl := range cfg.Clusters {
		if id.AllowsCluster(cl.Name) {
			out = append(out, cl)
		}
	}
	return out
}

// grafana returns the link to a dashboard (with its variables), or "" without a Grafana URL.
func (c *Console) grafana(uid string, vars url.Values) string {
	if c.o.GrafanaURL == "" {
		return ""
	}
	u := c.o.GrafanaURL + "/d/" + url.PathEscape(uid)
	if len(vars) > 0 {
		u += "?" + vars.Encode()
	}
	return u
}

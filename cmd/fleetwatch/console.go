package main

import (
	"github.com/fleetwatch/fleetwatch/console"
)

// newConsole builds the web console over the server's components. It reads the configuration
// in force at every request (s.cfg, stored by apply), so a reload's clusters, labels, weights
// and budget show at once. fleetwatch.yml has no Grafana URL yet, so the console links to no
// Grafana dashboard.
func (s *server) newConsole() (*console.Console, error) {
	q, r := console.EngineQueries(s.view, s.view)
	return console.New(console.Options{
		Query: q, Range: r,
		Config:    s.cfg.Load,
		Incidents: s.incidents, IncidentStore: s.store,
		Remediations: s.remedStore, Remediator: s.remediate,
		Schedule: s.schedule, ScheduleEnabled: s.scheduling.Load,
		GrafanaURL: s.opts.GrafanaURL,
		Logger:     s.logger.With("component", "console"),
	})
}

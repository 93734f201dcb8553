// Package access is the one layer in front of every fleetwatch HTTP handler: it establishes
// who sent a request (a basic-auth user of --web.config.file, a client certificate, a bearer
// token of an identity in fleetwatch.yml, or a member cluster's remote-write credentials),
// checks the role the endpoint needs (read, operate, admin; clusters only ingest), limits a
// team identity to its clusters (matchers injected into every PromQL selector with
// prom-label-proxy's injectproxy, rules and alerts filtered), and counts every refusal.
//
// Handlers behind it read the identity with FromContext; they record it as the actor of what
// they change and filter what they list with Identity.AllowsAny. The package owns no state
// besides the settings it is given, reads no fleetwatch.yml (cmd/fleetwatch hands it the
// resolved identities) and starts no goroutines.
package access

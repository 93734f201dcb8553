// Package remediate acts on incidents: it matches each active incident (correlate) to a
// playbook, plans the steps with every API call they will make, runs them through the guards
// (approvals, dry run, rate limits, the fleet's blast-radius budget, the partition check,
// suppression, pauses), makes the calls through each cluster's API server with client-go, and
// verifies every action in PromQL on the global view: an empty or NaN answer is inconclusive
// and waits for a human, never a pass. Every plan, decision, call and verification is in a
// bbolt audit before it happens or right after it, and a restart resumes from there: each op
// writes its ID into an annotation of what it changes, so it never acts twice.
//
// See remediate/README.md for the playbooks, the guards and their defaults, the API and the
// metrics.
package remediate

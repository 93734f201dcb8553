// Package hooks delivers fleetwatch's incident and remediation events to on-call automation:
// outbound webhooks, each signed with HMAC-SHA256 over a timestamp and the body (the scheme
// GitHub and Stripe use; two secrets while one is rotated), filtered per receiver by event
// type, scope, severity, team and cluster, and retried with backoff until the receiver
// answers 2xx. The events come from the stores' journals (internal/journal), written in the
// same transaction as the change they describe; each receiver keeps a cursor in each journal
// (bbolt), so a kill -9 loses no event and sends at most the one in flight again, with the
// same idempotency key.
//
// It also serves the approval callbacks: a remediation.waiting_approval event carries a signed,
// expiring token for that one approval request, which an identity with the operate role posts
// back to approve or deny. hooks/README.md documents the payload and how to verify it.
package hooks

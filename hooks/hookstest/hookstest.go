// Package hookstest is a webhook receiver for tests: it keeps the deliveries whose signature
// verifies, refuses the others, and can be taken down and brought back.
package hookstest

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/hooks"
)

// Sink is an http.Handler that receives fleetwatch's webhooks signed with Secret.
type Sink struct {
	Secret string

	mu     sync.Mutex
	down   bool
	events []hooks.Event
	bad    int
}

// ServeHTTP answers 503 while down, 401 to a delivery whose signature or timestamp does not
// verify, and 200 once it kept the event.
func (s *Sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		http.Error(w, "receiver down", http.StatusServiceUnavailable)
		return
	}
	if err := hooks.Verify([]string{s.Secret}, r.Header.Get(hooks.HeaderTimestamp), r.Header.Get(hooks.HeaderSignature), body, hooks.DefaultTolerance, time.Now()); err != nil {
		s.bad++
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var ev hooks.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.events = append(s.events, ev)
}

// SetDown takes the receiver down (503) or brings it back.
func (s *Sink) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// Events are the deliveries kept, in the order they came.
func (s *Sink) Events() []hooks.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hooks.Event(nil), s.events...)
}

// Refused counts the deliveries whose signature did not verify.
func (s *Sink) Refused() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bad
}

// Find returns the first event of type typ that is about remediation rem, or incident inc
// ("": any).
func (s *Sink) Find(typ, rem, inc string) (hooks.Event, bool) {
	for _, ev := range s.Events() {
		if ev.Type != typ {
			continue
		}
		if rem != "" && (ev.Remediation == nil || ev.Remediation.ID != rem) {
			continue
		}
		if inc != "" && (ev.Incident == nil || ev.Incident.ID != inc) {
			continue
		}
		return ev, true
	}
	return hooks.Event{}, false
}

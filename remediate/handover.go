package remediate

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fleetwatch/fleetwatch/correlate"
)

// With leader election, the leader keeps what the next leader needs in the hub, next to the
// Lease: a ConfigMap of the Lease's name in the Lease's namespace, whose one key is the gzipped
// JSON of a sharedState. It holds every remediation that is not over, those that are over while
// their incident is open (so that it is not remediated again) or while a failover waits for its
// failback, the pauses, and the IDs of the remediations that left it, for a day after. The
// leader writes it before each step's first write to a cluster (and before an undo) and before
// it acknowledges a decision or a pause, and at the end of each evaluation when something
// changed; each write names the resourceVersion it last read or wrote, and each evaluation
// checks it, so a process that lost the Lease without knowing it (a stale leader) reads the
// state again instead of acting on what another process now runs. A process that takes the
// Lease reads it first and continues from there (adopt).

// WrittenByAnnotation names, on the shared state's ConfigMap, the process that last wrote it.
const WrittenByAnnotation = "fleetwatch.io/written-by"

// Keys and labels of the shared state's ConfigMap.
const (
	sharedKey         = "state.json.gz"
	writtenAtAnnot    = "fleetwatch.io/written-at"
	sharedComponent   = "remediation-state"
	endedKept         = 24 * time.Hour
	maxSharedGzipSize = 1000 << 10 // a ConfigMap holds at most 1 MiB
)

// EventAdopted is the audit event of a remediation a process took over from the hub.
const EventAdopted = "adopted"

// ErrHandedOver is returned when the shared state in the hub was written by another process
// since this one last read it: this process no longer decides.
var ErrHandedOver = errors.New("the remediation state in the hub was written by another process (the Lease changed hands)")

// sharedState is what a leader leaves in the hub for the next one.
type sharedState struct {
	Remediations []*Remediation         `json:"remediations"`
	Paused       map[string]string      `json:"paused,omitempty"`
	Ended        map[string]endedRecord `json:"ended,omitempty"`
}

// endedRecord is a remediation that ended and is no longer shared whole: kept endedKept
// after it left.
type endedRecord struct {
	State  string    `json:"state"`
	DoneAt time.Time `json:"done_at"`
	LeftAt time.Time `json:"left_at"`
}

// bindWindow is how long an adopted remediation whose incident is not open here waits for this
// process's incident of the same key: a replica that just started opens it once the members'
// alerts reach it (Prometheus sends them again every minute), and that incident is the same
// problem. Later, an incident of the same key is a new problem.
const bindWindow = 5 * time.Minute

// handover is this process's side of the shared state.
type handover struct {
	client              kubernetes.Interface
	namespace, name, id string
	// ready: the shared state was read since this process took the Lease; until then it
	// neither acts nor writes it.
	ready bool
	rv    string // the ConfigMap's resourceVersion as this process last read or wrote it
	// written is what it last wrote or read (a write that changes nothing is not sent).
	written []byte
	final   map[string]*Remediation // over, and still shared
	ended   map[string]endedRecord
	marks   map[string]string // remediation ID -> the step and attempt last shared
	// unbound are adopted remediations still bound to the other process's incident, until
	// the time this process's incident of the same key may take them (bindWindow).
	unbound map[string]time.Time
}

func newHandover(client kubernetes.Interface, namespace, name, identity string) *handover {
	return &handover{client: client, namespace: namespace, name: name, id: identity,
		final: map[string]*Remediation{}, ended: map[string]endedRecord{}, marks: map[string]string{}, unbound: map[string]time.Time{}}
}

// read returns the shared state, who wrote it and its resourceVersion ("" and an empty state
// when none was written yet).
func (h *handover) read(ctx context.Context) (*sharedState, string, string, error) {
	cm, err := h.client.CoreV1().ConfigMaps(h.namespace).Get(ctx, h.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		h.written = nil
		return &sharedState{}, "", "", nil
	}
	if err != nil {
		return nil, "", "", err
	}
	data, ok := cm.BinaryData[sharedKey]
	if !ok {
		return nil, "", "", fmt.Errorf("ConfigMap %s/%s has no %s", h.namespace, h.name, sharedKey)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, "", "", fmt.Errorf("ConfigMap %s/%s: %s: %w", h.namespace, h.name, sharedKey, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, "", "", fmt.Errorf("ConfigMap %s/%s: %s: %w", h.namespace, h.name, sharedKey, err)
	}
	var st sharedState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, "", "", fmt.Errorf("ConfigMap %s/%s: %s: %w", h.namespace, h.name, sharedKey, err)
	}
	writer := cm.Annotations[WrittenByAnnotation]
	if at := cm.Annotations[writtenAtAnnot]; at != "" {
		writer += " at " + at
	}
	h.written = raw
	return &st, writer, cm.ResourceVersion, nil
}

// check reads the shared state's resourceVersion: when another process wrote it since this one
// last read or wrote it, this one must read it again (ready false) before it acts.
func (h *handover) check(ctx context.Context) error {
	cm, err := h.client.CoreV1().ConfigMaps(h.namespace).Get(ctx, h.name, metav1.GetOptions{})
	rv := ""
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("reading the remediation state from ConfigMap %s/%s in the hub: %w", h.namespace, h.name, err)
	default:
		rv = cm.ResourceVersion
	}
	if rv != h.rv {
		h.ready = false
	}
	return nil
}

// write replaces the shared state, provided nobody wrote it since this process last did.
func (h *handover) write(ctx context.Context, st *sharedState, now time.Time) error {
	if !h.ready {
		return fmt.Errorf("%w: it was not read since this process took the Lease", ErrHandedOver)
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if bytes.Equal(raw, h.written) {
		return nil
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(raw); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if buf.Len() > maxSharedGzipSize {
		return fmt.Errorf("the remediation state for the hub is %d bytes gzipped, more than a ConfigMap holds (%d): too many remediations at once", buf.Len(), maxSharedGzipSize)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: h.name, Namespace: h.namespace, ResourceVersion: h.rv,
			Labels:      map[string]string{"app.kubernetes.io/name": "fleetwatch", "app.kubernetes.io/component": sharedComponent},
			Annotations: map[string]string{WrittenByAnnotation: h.id, writtenAtAnnot: now.UTC().Format(time.RFC3339)}},
		BinaryData: map[string][]byte{sharedKey: buf.Bytes()},
	}
	var out *corev1.ConfigMap
	if h.rv == "" {
		out, err = h.client.CoreV1().ConfigMaps(h.namespace).Create(ctx, cm, metav1.CreateOptions{})
	} else {
		out, err = h.client.CoreV1().ConfigMaps(h.namespace).Update(ctx, cm, metav1.UpdateOptions{})
	}
	switch {
	case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err):
		h.ready = false // read it again before anything else
		return fmt.Errorf("%w: %v", ErrHandedOver, err)
	case err != nil:
		return fmt.Errorf("writing the remediation state to ConfigMap %s/%s in the hub: %w", h.namespace, h.name, err)
	}
	h.rv, h.written = out.ResourceVersion, raw
	return nil
}

// mark is how far a remediation was when it was last shared: a step's first write, and a
// retry's, waits until the hub has the remediation that far.
func mark(r *Remediation) string {
	if r.Current < len(r.Steps) {
		return fmt.Sprintf("%d/%d/%s", r.Current, r.Steps[r.Current].Attempts, r.State)
	}
	return fmt.Sprintf("%d/%s", r.Current, r.State)
}

// sharedNow is what the hub should hold now: the remediations that are not over, those over
// that are still shared, the pauses. With open (the end of an evaluation), an ended one
// whose incident is not open and that waits for no failback leaves it, and is remembered as
// ended for a day. A pending remediation (a decision not kept yet) stands for the active one
// of its ID.
func (e *Engine) sharedNow(open map[string]*correlate.Incident, paused map[string]string, now time.Time, pending []*Remediation) *sharedState {
	h := e.hub
	if open != nil {
		for id, until := range h.unbound {
			if now.After(until) {
				delete(h.unbound, id)
			}
		}
		for id, r := range h.final {
			_, ok := open[r.IncidentID]
			if _, unbound := h.unbound[id]; !ok && !unbound && e.failovers[id] == nil && e.active[id] == nil {
				delete(h.final, id)
				h.ended[id] = endedRecord{State: r.State, DoneAt: r.DoneAt, LeftAt: now}
			}
		}
		maps.DeleteFunc(h.ended, func(_ string, r endedRecord) bool { return now.Sub(r.LeftAt) > endedKept })
	}
	st := &sharedState{Paused: paused, Ended: h.ended}
	for _, id := range slices.Sorted(maps.Keys(e.active)) {
		r := e.active[id]
		if i := slices.IndexFunc(pending, func(p *Remediation) bool { return p.ID == id }); i >= 0 {
			r = pending[i]
		}
		st.Remediations = append(st.Remediations, r)
	}
	for _, id := range slices.Sorted(maps.Keys(h.final)) {
		if e.active[id] == nil {
			st.Remediations = append(st.Remediations, h.final[id])
		}
	}
	return st
}

// share writes what the hub should hold (see sharedNow) and marks every remediation as shared
// that far.
func (e *Engine) share(ctx context.Context, open map[string]*correlate.Incident, paused map[string]string, now time.Time, pending ...*Remediation) error {
	if e.hub == nil {
		return nil
	}
	st := e.sharedNow(open, paused, now, pending)
	if err := e.hub.write(ctx, st, now); err != nil {
		return err
	}
	clear(e.hub.marks)
	for _, r := range st.Remediations {
		e.hub.marks[r.ID] = mark(r)
	}
	return nil
}

// shareFirst makes sure the hub has the remediation as far as it is now before one of its ops
// writes to a cluster: a process that takes over continues from there.
func (e *Engine) shareFirst(ctx context.Context, r *Remediation, now time.Time) error {
	if e.hub == nil || e.hub.marks[r.ID] == mark(r) {
		return nil
	}
	return e.share(ctx, nil, e.paused, now)
}

// endShared remembers, for the shared state, a remediation that is over.
func (e *Engine) endShared(r *Remediation) {
	if e.hub != nil {
		e.hub.final[r.ID] = r
	}
}

// adopt reads the shared state when this process has taken the Lease (or another wrote it
// since), and continues from it. The state is the truth of what runs:
//   - a copy of this process's own the state does not hold runs nowhere: it ends as the state
//     remembers it ended, or is cancelled (one that never acted no longer counts as its
//     incident's remediation, which is planned again if still open);
//   - a remediation the state holds replaces this process's copy, bound to this process's
//     incident of the same key (each process has its own incident IDs), now or, when that is
//     not open yet, once it opens within bindWindow;
//   - a failover this process waits to fail back that the state does not hold waits no more
//     (its failback was planned there);
//   - the state's pauses replace this process's.
//
// Each change is stored with its audit entry. Without any state yet (the first leader), this
// process's own remediations are what the first write shares.
func (e *Engine) adopt(ctx context.Context, now time.Time) error {
	h := e.hub
	st, writer, rv, err := h.read(ctx)
	if err != nil {
		return fmt.Errorf("reading the remediation state from ConfigMap %s/%s in the hub: %w", h.namespace, h.name, err)
	}
	if writer == "" {
		writer = "another process"
	}
	shared := map[string]bool{}
	for _, r := range st.Remediations {
		shared[r.ID] = true
	}
	if rv != "" {
		for _, id := range slices.Sorted(maps.Keys(e.active)) {
			r := e.active[id]
			if shared[id] {
				continue
			}
			var err error
			switch ended, ok := st.Ended[id]; {
			case ok:
				err = e.setState(r, now, ended.State, fmt.Sprintf("ended %s in a process that led after this one (the hub's state, written by %s): its audit has the rest", ended.State, writer))
			case r.acted():
				err = e.setState(r, now, StateCancelled, fmt.Sprintf("handed over: the hub's state (written by %s) does not hold it, so no process runs it any more; what it did stays", writer))
			default:
				err = e.setState(r, now, StateCancelled, fmt.Sprintf("handed over before it acted: the hub's state (written by %s) does not hold it; its incident is planned again if still open", writer))
				if err == nil {
					err = e.uncover(r)
				}
			}
			if err != nil {
				return err
			}
			delete(e.active, id)
		}
		maps.DeleteFunc(e.failovers, func(id string, _ *Remediation) bool { return !shared[id] })
	}
	byKey := map[string]string{}
	for _, inc := range e.o.Incidents() {
		byKey[inc.Key] = inc.ID
	}
	for _, r := range st.Remediations {
		local := e.active[r.ID]
		if local == nil {
			if local, err = e.o.Store.Get(r.ID); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
		}
		if local != nil && sameRemediation(local, r) {
			if Final(local.State) {
				h.final[r.ID] = local
			}
			e.cover(local)
			continue
		}
		detail := fmt.Sprintf("adopted from the hub, as written by %s: %s", writer, r.State)
		if r.FailbackOf == "" {
			switch id, ok := byKey[r.IncidentKey]; {
			case ok && id != r.IncidentID:
				detail += fmt.Sprintf("; its incident %s is %s here (%s)", r.IncidentID, id, r.IncidentKey)
				r.IncidentID = id
			case !ok:
				h.unbound[r.ID] = now.Add(bindWindow)
			}
		}
		if local != nil {
			r.Revision = max(r.Revision, local.Revision)
		}
		r.Revision++
		if err := e.o.Store.Save(r, e.entry(r, "", EventAdopted, actor, detail)); err != nil {
			return err
		}
		e.logger.Info("remediation adopted from the hub", "remediation", r.ID, "state", r.State, "written_by", writer)
		e.cover(r)
		if Final(r.State) {
			delete(e.active, r.ID)
			delete(e.failovers, r.ID) // its failback may be planned there
			h.final[r.ID] = r
			e.awaitFailback(r)
		} else {
			e.active[r.ID] = r
		}
	}
	paused := st.Paused
	if paused == nil {
		paused = map[string]string{}
	}
	if rv != "" && !maps.Equal(paused, e.paused) {
		for _, c := range slices.Sorted(maps.Keys(e.paused)) {
			if _, ok := paused[c]; !ok {
				if err := e.o.Store.SetPaused(c, "", &AuditEntry{Time: now, Event: EventGuard, Actor: actor, Detail: fmt.Sprintf("resumed %s, as the hub says (written by %s)", scopeName(c), writer)}); err != nil {
					return err
				}
			}
		}
		for _, c := range slices.Sorted(maps.Keys(paused)) {
			if e.paused[c] != paused[c] {
				if err := e.o.Store.SetPaused(c, paused[c], &AuditEntry{Time: now, Event: EventGuard, Actor: actor, Detail: fmt.Sprintf("paused %s by %s, as the hub says (written by %s)", scopeName(c), paused[c], writer)}); err != nil {
					return err
				}
			}
		}
		e.paused = paused
	}
	if st.Ended != nil {
		h.ended = st.Ended
	}
	h.rv, h.ready = rv, true
	clear(h.marks)
	for _, r := range st.Remediations {
		h.marks[r.ID] = mark(r)
	}
	return nil
}

// bindAdopted binds each adopted remediation still bound to the other process's incident to
// this process's incident of the same key, once it is open (within bindWindow of the adoption).
func (e *Engine) bindAdopted(incidents []*correlate.Incident, now time.Time) error {
	if e.hub == nil || len(e.hub.unbound) == 0 {
		return nil
	}
	byKey := map[string]*correlate.Incident{}
	for _, inc := range incidents {
		byKey[inc.Key] = inc
	}
	for _, id := range slices.Sorted(maps.Keys(e.hub.unbound)) {
		r := e.active[id]
		if r == nil {
			r = e.hub.final[id]
		}
		if r == nil || now.After(e.hub.unbound[id]) {
			continue
		}
		inc := byKey[r.IncidentKey]
		if inc == nil {
			continue
		}
		detail := fmt.Sprintf("its incident %s is %s here (%s), which opened after the adoption", r.IncidentID, inc.ID, inc.Key)
		old := r.IncidentID
		r.IncidentID = inc.ID
		if err := e.save(r, now, e.entry(r, "", EventAdopted, actor, detail)); err != nil {
			r.IncidentID = old // bound at the next evaluation
			return err
		}
		delete(e.hub.unbound, id)
		e.cover(r)
	}
	return nil
}

// uncover forgets that a remediation covered its incident's clusters (it never acted): the
// incident's other remediations cover what they cover.
func (e *Engine) uncover(r *Remediation) error {
	ids, err := e.o.Store.ForIncident(r.IncidentID)
	if err != nil {
		return err
	}
	delete(e.covered, r.IncidentID)
	for _, id := range ids {
		if id == r.ID {
			continue
		}
		other, err := e.o.Store.Get(id)
		if err != nil {
			return err
		}
		e.cover(other)
	}
	return nil
}

// sameRemediation reports whether two copies of a remediation say the same, whatever their
// incident's ID (each process has its own) and revision.
func sameRemediation(a, b *Remediation) bool {
	x, y := *a, *b
	x.IncidentID, y.IncidentID = "", ""
	x.Revision, y.Revision = 0, 0
	x.UpdatedAt, y.UpdatedAt = time.Time{}, time.Time{}
	ja, err1 := json.Marshal(&x)
	jb, err2 := json.Marshal(&y)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

package hooks

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fleetwatch/fleetwatch/correlate"
	"github.com/fleetwatch/fleetwatch/internal/apiresp"
	"github.com/fleetwatch/fleetwatch/remediate"
)

// tokenPrefix names the token format, so a future one can be told apart.
const tokenPrefix = "fwa1."

// Claim is what an approval token names: one approval request of one remediation's step.
type Claim struct {
	Remediation string `json:"r"`
	Step        int    `json:"s"`
	// Requested is the request's time (Unix ns): the token is only good for that request,
	// so once it is decided (or the step asks again) the token is spent.
	Requested int64 `json:"q"`
	// Expires is when the request expires (Unix seconds), as the approval timeout says.
	Expires int64 `json:"x"`
}

// Tokens signs and checks approval tokens with one key.
type Tokens struct{ key []byte }

// NewTokens uses key to sign.
func NewTokens(key string) (*Tokens, error) {
	if len(key) < 16 {
		return nil, errors.New("approval key: at least 16 bytes")
	}
	return &Tokens{key: []byte(key)}, nil
}

// LoadOrCreateKey reads the approval key at path, or creates one (32 random bytes, hex, mode
// 0600) written to a temporary file and renamed into place, so a crash never leaves a half key.
func LoadOrCreateKey(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if k := strings.TrimSpace(string(b)); k != "" {
			return k, nil
		}
		return "", fmt.Errorf("approval key %s is empty", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var b [32]byte
	_, _ = rand.Read(b[:])
	k := hex.EncodeToString(b[:])
	tmp, err := os.CreateTemp(filepath.Dir(path), ".approval-key-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(k + "\n"); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return k, os.Rename(tmp.Name(), path)
}

// Token returns the token for the approval request that r's current step waits on, or ""
// when it waits on none.
func (t *Tokens) Token(r *remediate.Remediation) string {
	if r.Current >= len(r.Steps) {
		return ""
	}
	st := r.Steps[r.Current]
	if r.State != remediate.StateWaiting || st.State != remediate.StepWaiting || st.Approval == nil {
		return ""
	}
	c := Claim{Remediation: r.ID, Step: r.Current, Requested: st.Approval.RequestedAt.UnixNano(), Expires: st.Approval.ExpiresAt.Unix()}
	b, _ := json.Marshal(c)
	body := tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return body + "." + base64.RawURLEncoding.EncodeToString(t.sum(body))
}

func (t *Tokens) sum(body string) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(body))
	return m.Sum(nil)
}

// Token errors.
var (
	ErrBadToken     = errors.New("not a valid approval token")
	ErrTokenExpired = errors.New("approval token expired")
)

// Parse checks a token's signature and expiry and returns what it names.
func (t *Tokens) Parse(token string, now time.Time) (Claim, error) {
	var c Claim
	i := strings.LastIndexByte(token, '.')
	if i < len(tokenPrefix) || !strings.HasPrefix(token, tokenPrefix) {
		return c, ErrBadToken
	}
	body, sig := token[:i], token[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, t.sum(body)) {
		return c, ErrBadToken
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(body, tokenPrefix))
	if err != nil || json.Unmarshal(raw, &c) != nil || c.Remediation == "" {
		return c, ErrBadToken
	}
	if !now.Before(time.Unix(c.Expires, 0)) {
		return c, fmt.Errorf("%w at %s", ErrTokenExpired, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	return c, nil
}

// Approvals serves the approval callbacks:
//
//	GET  /api/v1/approvals/{token}    what the token asks to decide (read)
//	POST /api/v1/approvals/{token}    decide it: {"decision": "approve"|"deny", "comment": "..."} (operate)
//
// The token is a capability for one approval request, not an identity: the caller still
// authenticates, and the decision is recorded as theirs. A chat tool calls it with its own
// identity on behalf of the person who clicked, the console with the person's.
type Approvals struct {
	Tokens   *Tokens
	Engine   *remediate.Engine
	Store    *remediate.Store
	Identify correlate.IdentifyFunc
	Now      func() time.Time
}

// Handler serves the approval API.
func (a *Approvals) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/approvals/{token}", a.serveGet)
	mux.HandleFunc("POST /api/v1/approvals/{token}", a.serveDecide)
	return mux
}

// claim resolves the token of r to its remediation, as the caller may see it.
func (a *Approvals) claim(w http.ResponseWriter, r *http.Request) (Claim, *remediate.Remediation, bool) {
	c, err := a.Tokens.Parse(r.PathValue("token"), a.Now())
	switch {
	case errors.Is(err, ErrTokenExpired):
		apiresp.Error(w, http.StatusGone, "expired", err)
		return c, nil, false
	case err != nil:
		// A token fleetwatch did not sign names nothing it knows of.
		apiresp.Error(w, http.StatusNotFound, "not_found", err)
		return c, nil, false
	}
	id, _ := correlate.CallerOf(a.Identify, r)
	rem, err := a.Store.Get(c.Remediation)
	if err != nil || !id.AllowsAny(rem.Clusters) {
		apiresp.Error(w, http.StatusNotFound, "not_found", fmt.Errorf("remediation %s not found", c.Remediation))
		return c, nil, false
	}
	return c, rem, true
}

// ApprovalRequest is what GET answers.
type ApprovalRequest struct {
	Claim       Claim                  `json:"claim"`
	Current     bool                   `json:"current"`
	Remediation *remediate.Remediation `json:"remediation"`
}

func (a *Approvals) serveGet(w http.ResponseWriter, r *http.Request) {
	c, rem, ok := a.claim(w, r)
	if !ok {
		return
	}
	current := rem.Current == c.Step && rem.State == remediate.StateWaiting && rem.Steps[c.Step].Approval != nil &&
		rem.Steps[c.Step].Approval.RequestedAt.UnixNano() == c.Requested
	apiresp.Success(w, http.StatusOK, ApprovalRequest{Claim: c, Current: current, Remediation: rem})
}

func (a *Approvals) serveDecide(w http.ResponseWriter, r *http.Request) {
	id, ok := correlate.CallerOf(a.Identify, r)
	if !ok {
		apiresp.Error(w, http.StatusForbidden, "forbidden", errors.New("no authenticated identity: approving and denying need one"))
		return
	}
	c, _, ok := a.claim(w, r)
	if !ok {
		return
	}
	if a.Engine.NotLeading(w) {
		return
	}
	var req struct {
		Decision string `json:"decision"`
		Comment  string `json:"comment"`
	}
	if !remediate.DecodeBody(w, r, &req) {
		return
	}
	if req.Decision != "approve" && req.Decision != "deny" {
		apiresp.Error(w, http.StatusBadRequest, "bad_data", fmt.Errorf("decision: %q is neither \"approve\" nor \"deny\"", req.Decision))
		return
	}
	rem, err := a.Engine.DecideApproval(c.Remediation, c.Step, time.Unix(0, c.Requested), id.String()+" (approval link)", req.Decision == "approve", req.Comment)
	switch {
	case err == nil:
		apiresp.Success(w, http.StatusOK, rem)
	case errors.Is(err, remediate.ErrConflict):
		apiresp.Error(w, http.StatusConflict, "conflict", err)
	case errors.Is(err, remediate.ErrNotFound):
		apiresp.Error(w, http.StatusNotFound, "not_found", err)
	case errors.Is(err, remediate.ErrHandedOver):
		apiresp.Error(w, http.StatusServiceUnavailable, "unavailable", err)
	default:
		apiresp.Error(w, http.StatusInternalServerError, "internal", err)
	}
}

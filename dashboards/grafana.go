package dashboards

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"time"
)

// Client pushes dashboards through Grafana's HTTP API: the folder API (/api/folders) and the
// dashboard API (/api/dashboards/uid/<uid> to read, /api/dashboards/db to create or update).
type Client struct {
	// URL is Grafana's base URL, e.g. https://grafana.example (a sub-path is kept).
	URL string
	// Token is a service account token (or API key), sent as a bearer token. It needs the
	// Editor role, or folders:create and dashboards:write.
	Token string
	// HTTP defaults to a client with a 30s timeout.
	HTTP *http.Client
}

// Change is what a push did to a dashboard.
type Change string

const (
	ChangeCreated   Change = "created"
	ChangeUpdated   Change = "updated"
	ChangeUnchanged Change = "unchanged" // Grafana already had it; nothing was sent
)

// PushResult is one dashboard's outcome.
type PushResult struct {
	UID, Title string
	Change     Change
	// Details say what differs from the dashboard Grafana had, for updates: panels added,
	// removed and changed (by title), variables, other settings, the folder.
	Details []string
	// URL is the dashboard's path in Grafana, from Grafana's answer.
	URL string
	// Version is the dashboard's version in Grafana after the push.
	Version int
}

// APIError is an answer of Grafana's other than 2xx.
type APIError struct {
	Method, Path string
	Status       int
	Message      string
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("grafana %s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	switch e.Status {
	case http.StatusUnauthorized:
		msg += " (is the token valid?)"
	case http.StatusForbidden:
		msg += " (the token needs the Editor role, or folders:create and dashboards:write)"
	}
	return msg
}

// Retryable says whether the same request may succeed later.
func (e *APIError) Retryable() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// Push makes every dashboard exist in the folder titled folder, as generated: it creates the
// folder if need be, reads each dashboard Grafana has under the same UID, and creates or
// overwrites it only when it differs. It stops at the first failure, returning the results
// so far.
func (c *Client) Push(ctx context.Context, folder string, ds []Dashboard) ([]PushResult, error) {
	if c.URL == "" {
		return nil, errors.New("grafana URL: must be set")
	}
	if _, err := url.Parse(c.URL); err != nil {
		return nil, fmt.Errorf("grafana URL: %w", err)
	}
	folderUID, err := c.ensureFolder(ctx, folder)
	if err != nil {
		return nil, err
	}
	out := make([]PushResult, 0, len(ds))
	for _, d := range ds {
		r, err := c.push(ctx, folderUID, folder, d)
		if err != nil {
			return out, fmt.Errorf("push dashboard %s: %w", d.UID, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// FolderUID is the UID of the folder titled title: its slug, cut to Grafana's 40 characters.
func FolderUID(title string) string {
	s := slug(title)
	if s == "" {
		s = "fleetwatch"
	}
	if len(s) > 40 {
		s = strings.TrimSuffix(s[:40], "-")
	}
	return s
}

func (c *Client) ensureFolder(ctx context.Context, title string) (string, error) {
	uid := FolderUID(title)
	err := c.do(ctx, http.MethodGet, "/api/folders/"+url.PathEscape(uid), nil, nil)
	var apiErr *APIError
	switch {
	case err == nil:
		return uid, nil
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
	default:
		return "", fmt.Errorf("read folder %s: %w", uid, err)
	}
	if err := c.do(ctx, http.MethodPost, "/api/folders", map[string]any{"uid": uid, "title": title}, nil); err != nil {
		return "", fmt.Errorf("create folder %q: %w", title, err)
	}
	return uid, nil
}

func (c *Client) push(ctx context.Context, folderUID, folderTitle string, d Dashboard) (PushResult, error) {
	r := PushResult{UID: d.UID, Title: d.Title}
	ours, err := toMap(d.Model)
	if err != nil {
		return r, err
	}
	var existing struct {
		Dashboard map[string]any `json:"dashboard"`
		Meta      struct {
			FolderUID string `json:"folderUid"`
			URL       string `json:"url"`
			Version   int    `json:"version"`
		} `json:"meta"`
	}
	err = c.do(ctx, http.MethodGet, "/api/dashboards/uid/"+url.PathEscape(d.UID), nil, &existing)
	var apiErr *APIError
	switch {
	case err == nil:
		r.Details = diff(existing.Dashboard, ours)
		if existing.Meta.FolderUID != folderUID {
			r.Details = append(r.Details, fmt.Sprintf("moved to folder %q", folderTitle))
		}
		if len(r.Details) == 0 {
			r.Change, r.URL, r.Version = ChangeUnchanged, existing.Meta.URL, existing.Meta.Version
			return r, nil
		}
		r.Change = ChangeUpdated
	case errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound:
		r.Change = ChangeCreated
	default:
		return r, fmt.Errorf("read: %w", err)
	}
	// No id: Grafana finds the dashboard by uid. overwrite: the generated dashboard wins over
	// whatever was saved in between, which the details above reported.
	delete(ours, "id")
	body := map[string]any{
		"dashboard": ours,
		"folderUid": folderUID,
		"overwrite": true,
		"message":   "fleetwatch dashboards generate",
	}
	var saved struct {
		URL     string `json:"url"`
		Version int    `json:"version"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/dashboards/db", body, &saved); err != nil {
		return r, fmt.Errorf("save: %w", err)
	}
	r.URL, r.Version = saved.URL, saved.Version
	return r, nil
}

func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

// diff says how the dashboard Grafana has (theirs) differs from ours. Fields Grafana keeps
// for itself (id, version) are not compared; panels are compared by title.
func diff(theirs, ours map[string]any) []string {
	var out []string
	for _, k := range sortedKeys(ours) {
		switch k {
		case "id", "version":
			continue
		case "panels":
			out = append(out, diffPanels(theirs[k], ours[k])...)
		case "templating":
			if !reflect.DeepEqual(theirs[k], ours[k]) {
				out = append(out, "variables changed")
			}
		default:
			if !reflect.DeepEqual(theirs[k], ours[k]) {
				out = append(out, k+" changed")
			}
		}
	}
	return out
}

func diffPanels(theirs, ours any) []string {
	// Panels and rows are keyed by title; a dashboard's panel titles are unique (a test
	// checks), a row may share a panel's title.
	byTitle := func(v any) (map[string]any, []string) {
		m := map[string]any{}
		var order []string
		list, _ := v.([]any)
		for _, p := range list {
			pm, _ := p.(map[string]any)
			title, _ := pm["title"].(string)
			key := fmt.Sprintf("panel %q", title)
			if pm["type"] == "row" {
				key = fmt.Sprintf("row %q", title)
			}
			if _, dup := m[key]; !dup {
				order = append(order, key)
			}
			m[key] = p
		}
		return m, order
	}
	tm, torder := byTitle(theirs)
	om, oorder := byTitle(ours)
	var out []string
	for _, t := range oorder {
		p, ok := tm[t]
		switch {
		case !ok:
			out = append(out, t+" added")
		case !reflect.DeepEqual(p, om[t]):
			out = append(out, t+" changed")
		}
	}
	for _, t := range torder {
		if _, ok := om[t]; !ok {
			out = append(out, t+" removed")
		}
	}
	if len(out) == 0 && !reflect.DeepEqual(theirs, ours) {
		out = append(out, "panels moved")
	}
	return out
}

// do sends a JSON request and decodes a JSON answer into into (when not nil).
func (c *Client) do(ctx context.Context, method, path string, body, into any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return fmt.Errorf("read answer to %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var msg struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(b, &msg)
		if msg.Message == "" && len(b) < 200 {
			msg.Message = strings.TrimSpace(string(b))
		}
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, Message: msg.Message}
	}
	if into != nil {
		if err := json.Unmarshal(b, into); err != nil {
			return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
		}
	}
	return nil
}

package input

import (
	"bytes"
	"cmp"
	"hash/maphash"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/go-openapi/strfmt"
	"github.com/prometheus/alertmanager/api/v2/models"
)

// decodeTokens decodes a JSON array of PostableAlert by reading its tokens, without reflection.
// It handles what Prometheus's notifier sends, and gives up (ok false) on anything whose
// decoding by encoding/json it does not copy exactly, for encoding/json
// to decode: a field named otherwise than the model does (encoding/json matches names without
// regard to case) or given twice, a label or annotation value that is not a string, a value of
// another type than the field's, a date-time strfmt does not parse, invalid UTF-8 or JSON.
// Label and annotation names, and short values, are shared (readString).
func decodeTokens(body []byte) (out models.PostableAlerts, ok bool) {
	// Duplicate names are allowed: in a label set the last wins, as with encoding/json; a
	// field given twice is refused below.
	d := jsontext.NewDecoder(bytes.NewReader(body), jsontext.AllowDuplicateNames(true))
	tok, err := d.ReadToken()
	switch {
	case err != nil:
		return nil, false
	case tok.Kind() == 'n':
		return nil, isEOF(d)
	case tok.Kind() != '[':
		return nil, false
	}
	strs := &reqStrings{m: map[string]string{}}
	out = models.PostableAlerts{}
	for d.PeekKind() != ']' {
		switch d.PeekKind() {
		case 'n':
			if _, err := d.ReadToken(); err != nil {
				return nil, false
			}
			out = append(out, nil)
		case '{':
			pa, ok := decodeAlertTokens(d, strs)
			if !ok {
				return nil, false
			}
			out = append(out, pa)
		default:
			return nil, false
		}
	}
	if _, err := d.ReadToken(); err != nil {
		return nil, false
	}
	return out, isEOF(d)
}

// isEOF reports whether the decoder read all of its input but white space.
func isEOF(d *jsontext.Decoder) bool {
	_, err := d.ReadToken()
	return err == io.EOF
}

// decodeAlertTokens decodes one PostableAlert object.
func decodeAlertTokens(d *jsontext.Decoder, strs *reqStrings) (*models.PostableAlert, bool) {
	if _, err := d.ReadToken(); err != nil { // {
		return nil, false
	}
	pa := &models.PostableAlert{}
	var seen [5]bool
	field := func(i int) bool {
		if seen[i] {
			return false
		}
		seen[i] = true
		return true
	}
	for d.PeekKind() != '}' {
		name, ok := readString(d, strs)
		if !ok {
			return nil, false
		}
		switch name {
		case "labels":
			ok = field(0) && decodeLabelTokens(d, strs, &pa.Labels)
		case "annotations":
			ok = field(1) && decodeLabelTokens(d, strs, &pa.Annotations)
		case "startsAt":
			ok = field(2) && decodeTimeTokens(d, &pa.StartsAt)
		case "endsAt":
			ok = field(3) && decodeTimeTokens(d, &pa.EndsAt)
		case "generatorURL":
			ok = field(4)
			if ok {
				var s string
				s, ok = decodeURLTokens(d, strs)
				pa.GeneratorURL = strfmt.URI(s)
			}
		default:
			// Another field: skipped, unless encoding/json would take it for one of these.
			ok = !folds(name) && d.SkipValue() == nil
		}
		if !ok {
			return nil, false
		}
	}
	_, err := d.ReadToken() // }
	return pa, err == nil
}

// readString reads a string (an object's member name, or a label's value), kept once: in strs
// for the request, and across requests in sharedStrings when it is short. Label names and most label
// values (job, namespace, severity, the cluster's Prometheus) repeat from alert to alert and
// from request to request; a string without escapes already seen in the request costs no
// allocation.
func readString(d *jsontext.Decoder, strs *reqStrings) (string, bool) {
	plain, s, ok := strs.read(d)
	if !ok || plain == nil {
		return s, ok
	}
	if s, ok := strs.m[string(plain)]; ok {
		return s, true
	}
	s = sharedStrings.get(plain)
	strs.m[s] = s
	return s, true
}

// reqStrings are one request's strings, each kept once, and a buffer to unquote into.
type reqStrings struct {
	m       map[string]string
	scratch []byte
	pairs   []string // a label set's names and values, before its map is made to size
}

// read reads a string value: what is between its quotes when it has no escapes (plain, in the
// decoder's buffer: the caller decides how to keep it), else the string it holds (unquoted into
// the request's buffer, then copied) and a nil plain.
func (r *reqStrings) read(d *jsontext.Decoder) (plain []byte, s string, ok bool) {
	raw, err := d.ReadValue()
	if err != nil || len(raw) < 2 || raw[0] != '"' {
		return nil, "", false
	}
	if inner := raw[1 : len(raw)-1]; bytes.IndexByte(inner, '\\') < 0 {
		return inner, "", true
	}
	r.scratch, err = jsontext.AppendUnquote(r.scratch[:0], raw)
	return nil, string(r.scratch), err == nil
}

// sharedStrings keeps recent short strings for every request to share; sharedURLs recent
// generator URLs (a rule's, in its cluster: the same in every alert it fires, and longer).
var (
	sharedStrings stringCache
	sharedURLs    = stringCache{max: maxSharedURL}
)

// stringCache is a direct-mapped cache of short strings by their hash: a string whose slot
// holds it is shared, any other takes the slot. Strings that repeat across requests (label
// names, most label values, summaries, runbook URLs) stay; those of one alert (a pod's name,
// a UID) pass through. Unlike unique.Make, it registers no weak pointer for each new string
// (which cost more than the copies it saved, the alert bench's storm being mostly new pod
// names), and holds at most its slots' strings. Safe for concurrent use: a slot is replaced
// whole.
type stringCache struct {
	max   int // the longest string shared; 0: maxShared
	seed  maphash.Seed
	once  sync.Once
	slots [1 << 12]atomic.Pointer[string]
}

// maxShared is the longest string shared: longer ones, a description, are mostly their
// alert's own.
const maxShared = 128

// maxSharedURL is the longest generator URL shared.
const maxSharedURL = 2048

// get returns b as a string, shared with the other requests that held it when its slot still
// holds it.
func (c *stringCache) get(b []byte) string {
	if limit := cmp.Or(c.max, maxShared); len(b) > limit {
		return string(b)
	}
	c.once.Do(func() { c.seed = maphash.MakeSeed() })
	slot := &c.slots[maphash.Bytes(c.seed, b)&(uint64(len(c.slots))-1)]
	if p := slot.Load(); p != nil && *p == string(b) {
		return *p
	}
	s := string(b)
	slot.Store(&s)
	return s
}

// folds reports whether name might match a field of PostableAlert without regard to case, as
// encoding/json matches (with Unicode's folding, so any name not all ASCII might).
func folds(name string) bool {
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			return true
		}
	}
	for _, f := range []string{"labels", "annotations", "startsAt", "endsAt", "generatorURL"} {
		if strings.EqualFold(name, f) {
			return true
		}
	}
	return false
}

// decodeLabelTokens decodes a label set into ls: null, or an object of strings.
func decodeLabelTokens(d *jsontext.Decoder, strs *reqStrings, ls *models.LabelSet) bool {
	if _, null, ok := readKind(d, '{'); null || !ok {
		return ok
	}
	// The pairs are read first and the map made to their number: a map grown one label at a
	// time past 8 is built twice (Go's maps hold up to 8 entries in one group).
	pairs := strs.pairs[:0]
	for d.PeekKind() != '}' {
		name, ok := readString(d, strs)
		if !ok {
			return false
		}
		v, ok := readString(d, strs)
		if !ok {
			return false
		}
		pairs = append(pairs, name, v)
	}
	*ls = make(models.LabelSet, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		(*ls)[pairs[i]] = pairs[i+1]
	}
	clear(pairs)
	strs.pairs = pairs[:0]
	_, err := d.ReadToken()
	return err == nil
}

// readKind reads a token that must be null or of kind k; null reports a null.
func readKind(d *jsontext.Decoder, k jsontext.Kind) (tok jsontext.Token, null, ok bool) {
	tok, err := d.ReadToken()
	switch {
	case err != nil:
		return tok, false, false
	case tok.Kind() == 'n':
		return tok, true, true
	}
	return tok, false, tok.Kind() == k
}

// decodeTimeTokens decodes a date-time as strfmt.DateTime's UnmarshalJSON does: null leaves it
// zero, a string is parsed.
func decodeTimeTokens(d *jsontext.Decoder, t *strfmt.DateTime) bool {
	tok, null, ok := readKind(d, '"')
	if null || !ok {
		return ok
	}
	tt, err := parseDateTime(tok.String())
	if err != nil {
		return false
	}
	*t = tt
	return true
}

// parseDateTime is strfmt.ParseDateTime, which tries its layouts in turn: a time with exactly
// three digits of fraction (what Prometheus writes) fails the two microsecond layouts before
// it and parses as strfmt.RFC3339Millis, so that one is tried first.
func parseDateTime(s string) (strfmt.DateTime, error) {
	if len(s) >= 24 && s[19] == '.' && digit(s[20]) && digit(s[21]) && digit(s[22]) && !digit(s[23]) {
		if tt, err := time.ParseInLocation(strfmt.RFC3339Millis, s, strfmt.DefaultTimeLocation); err == nil {
			return strfmt.DateTime(tt), nil
		}
	}
	return strfmt.ParseDateTime(s)
}

func digit(c byte) bool { return '0' <= c && c <= '9' }

// decodeURLTokens decodes a generator URL: null leaves it empty; one without escapes is shared
// with the other requests that held it (sharedURLs).
func decodeURLTokens(d *jsontext.Decoder, strs *reqStrings) (string, bool) {
	if d.PeekKind() == 'n' {
		_, err := d.ReadToken()
		return "", err == nil
	}
	plain, s, ok := strs.read(d)
	if !ok || plain == nil {
		return s, ok
	}
	return sharedURLs.get(plain), true
}

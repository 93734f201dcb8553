package amconfig

import (
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/alertmanager/config"
	"go.yaml.in/yaml/v2"
)

// redacted is what Alertmanager's Secret and SecretURL types marshal to. Loaded back, a
// redacted URL is an empty URL and a redacted key is the string "<secret>": a configuration
// that Alertmanager accepts and that cannot notify anyone.
const redacted = "<secret>"

// clearValues are the sections the spec gives, as written, in generic YAML: the global section
// and each receiver by its name.
type clearValues struct {
	global    yaml.MapSlice
	receivers map[string]yaml.MapSlice
}

// render marshals cfg, drops what marshalling writes for unset fields (null, empty lists,
// `continue: false`, empty *_file paths), orders each route's keys for reading, and writes the
// sections the spec gave as they were written: Alertmanager's types would spell out every
// default (Alertmanager's own, frozen at this version) and redact every secret. It returns
// the places of the secrets written in clear.
func render(cfg *config.Config, clear clearValues) ([]byte, []string, error) {
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal configuration: %w", err)
	}
	var tree yaml.MapSlice
	if err := yaml.Unmarshal(b, &tree); err != nil {
		return nil, nil, fmt.Errorf("read back marshalled configuration: %w", err)
	}
	tree = prune(tree).(yaml.MapSlice)
	var secrets []string
	for i, it := range tree {
		switch it.Key {
		case "route":
			orderRoute(it.Value)
		case "global":
			if clear.global == nil {
				continue
			}
			if err := findSecrets(it.Value, clear.global, "global", &secrets); err != nil {
				return nil, nil, err
			}
			tree[i].Value = clear.global
		case "receivers":
			rs, _ := it.Value.([]any)
			for j, r := range rs {
				name := fmt.Sprint(lookup(r, "name"))
				raw, ok := clear.receivers[name]
				if !ok {
					continue
				}
				if err := findSecrets(r, raw, "receivers["+name+"]", &secrets); err != nil {
					return nil, nil, err
				}
				rs[j] = append(yaml.MapSlice{{Key: "name", Value: name}}, deleteKey(raw, "name")...)
			}
		}
	}
	if p := redactedAt(tree, ""); p != "" {
		return nil, nil, fmt.Errorf("%s: would be written redacted, as %q", p, redacted)
	}
	out, err := yaml.Marshal(tree)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal configuration: %w", err)
	}
	return out, secrets, nil
}

// findSecrets walks the marshalled form of a section alongside the section as written and
// appends the places Alertmanager redacts, which hold secrets, to secrets. Alertmanager's types
// marshal under the keys they read, so the places correspond. A secret written as the redacted
// value itself was copied from Alertmanager's API or `amtool config show` and would load as an
// empty URL or a wrong key: an error.
func findSecrets(typed, written any, path string, secrets *[]string) error {
	switch o := typed.(type) {
	case yaml.MapSlice:
		for _, it := range o {
			k := fmt.Sprint(it.Key)
			if err := findSecrets(it.Value, lookup(written, k), path+"."+k, secrets); err != nil {
				return err
			}
		}
	case []any:
		w, _ := written.([]any)
		for i := range o {
			var wi any
			if i < len(w) {
				wi = w[i]
			}
			if err := findSecrets(o[i], wi, fmt.Sprintf("%s[%d]", path, i), secrets); err != nil {
				return err
			}
		}
	case string:
		if o != redacted || written == nil {
			return nil
		}
		if fmt.Sprint(written) == redacted {
			return fmt.Errorf("%s: %q is a redacted value, not the secret; put the secret in a file and use the *_file field", path, redacted)
		}
		*secrets = append(*secrets, path)
	}
	return nil
}

// redactedAt returns the first place in v that holds the redacted value, or "".
func redactedAt(v any, path string) string {
	switch o := v.(type) {
	case yaml.MapSlice:
		for _, it := range o {
			if p := redactedAt(it.Value, strings.TrimPrefix(path+"."+fmt.Sprint(it.Key), ".")); p != "" {
				return p
			}
		}
	case []any:
		for i, e := range o {
			if p := redactedAt(e, fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	case string:
		if o == redacted {
			return path
		}
	}
	return ""
}

// routeKeys is the order the keys of a route are written in: what it matches, where it goes,
// when, and then its children.
var routeKeys = []string{"receiver", "matchers", "group_by", "continue", "group_wait", "group_interval", "repeat_interval", "routes"}

// orderRoute sorts the keys of a route and of its children into routeKeys' order; keys it does
// not know stay after them, in their order.
func orderRoute(v any) {
	r, ok := v.(yaml.MapSlice)
	if !ok {
		return
	}
	rank := func(k any) int {
		for i, n := range routeKeys {
			if fmt.Sprint(k) == n {
				return i
			}
		}
		return len(routeKeys)
	}
	slices.SortStableFunc(r, func(a, b yaml.MapItem) int { return rank(a.Key) - rank(b.Key) })
	if children, ok := lookup(r, "routes").([]any); ok {
		for _, c := range children {
			orderRoute(c)
		}
	}
}

// prune drops the keys marshalling writes for fields that are not set. Each dropped form means
// the same as an absent key to Alertmanager: null, empty lists and maps, `continue: false` (a
// route's default), and an empty *_file path (a file is read only when its path is set).
func prune(v any) any {
	switch o := v.(type) {
	case yaml.MapSlice:
		kept := o[:0]
		for _, it := range o {
			k := fmt.Sprint(it.Key)
			switch x := it.Value.(type) {
			case nil:
				continue
			case []any:
				if len(x) == 0 {
					continue
				}
			case yaml.MapSlice:
				if len(x) == 0 {
					continue
				}
			case bool:
				if k == "continue" && !x {
					continue
				}
			case string:
				if strings.HasSuffix(k, "_file") && x == "" {
					continue
				}
			}
			it.Value = prune(it.Value)
			kept = append(kept, it)
		}
		return kept
	case []any:
		for i := range o {
			o[i] = prune(o[i])
		}
	}
	return v
}

// lookup returns the value of key in a YAML mapping, or nil.
func lookup(m any, key string) any {
	switch o := m.(type) {
	case yaml.MapSlice:
		for _, it := range o {
			if fmt.Sprint(it.Key) == key {
				return it.Value
			}
		}
	case map[any]any:
		for k, v := range o {
			if fmt.Sprint(k) == key {
				return v
			}
		}
	}
	return nil
}

// setKey sets key in a YAML mapping that is a yaml.MapSlice or nil.
func setKey(m any, key string, value any) yaml.MapSlice {
	o, _ := m.(yaml.MapSlice)
	for i, it := range o {
		if fmt.Sprint(it.Key) == key {
			o[i].Value = value
			return o
		}
	}
	return append(o, yaml.MapItem{Key: key, Value: value})
}

// deleteKey removes key from a YAML mapping that is a yaml.MapSlice or nil.
func deleteKey(m any, key string) yaml.MapSlice {
	o, _ := m.(yaml.MapSlice)
	kept := yaml.MapSlice{}
	for _, it := range o {
		if fmt.Sprint(it.Key) != key {
			kept = append(kept, it)
		}
	}
	return kept
}

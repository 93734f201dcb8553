package pack

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

//go:embed *.yml.tmpl
var templates embed.FS

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// funcs are the helpers the templates may use besides the fields of config.Thresholds.
var funcs = template.FuncMap{
	// percent writes a ratio as a percentage for annotations: 0.85 -> "85%".
	"percent": func(v float64) string { return strconv.FormatFloat(v*100, 'g', 4, 64) + "%" },
	// seconds writes a duration as a PromQL number of seconds: 2m -> "120".
	"seconds": func(d model.Duration) string { return formatFloat(time.Duration(d).Seconds()) },
}

// parsed holds the templates, parsed once; they are embedded, so a parse error is a bug that
// every test catches.
var parsed = func() *template.Template {
	// The templates use [[ ]] so Prometheus's own {{ }} alert templating passes through as is.
	return template.Must(template.New("pack").Delims("[[", "]]").Funcs(funcs).
		Option("missingkey=error").ParseFS(templates, "*.yml.tmpl"))
}()

// Render validates t and renders every rule file of the pack, keyed by file name (the template
// name without ".tmpl", e.g. "nodes.yml"). Each file is checked with Prometheus's rulefmt, so a
// returned file loads into Prometheus, promtool and the rules manager as is.
func Render(t config.Thresholds) (map[string][]byte, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	names, err := fs.Glob(templates, "*.yml.tmpl")
	if err != nil {
		return nil, fmt.Errorf("list rule templates: %w", err)
	}
	out := make(map[string][]byte, len(names))
	for _, name := range names {
		var buf bytes.Buffer
		if err := parsed.ExecuteTemplate(&buf, name, t); err != nil {
			return nil, fmt.Errorf("render rule template %s: %w", name, err)
		}
		file := strings.TrimSuffix(name, ".tmpl")
		if _, errs := rulefmt.Parse(buf.Bytes(), false, model.LegacyValidation); len(errs) > 0 {
			return nil, fmt.Errorf("rule file %s: %w", file, errors.Join(errs...))
		}
		out[file] = buf.Bytes()
	}
	return out, nil
}

// Files renders the pack with t into dir (which must exist) and returns the written paths,
// sorted. Files are written whole or not at all: each goes to a temporary file first and is
// renamed into place, so a rules manager reloading dir never reads half a file.
func Files(t config.Thresholds, dir string) ([]string, error) {
	rendered, err := Render(t)
	if err != nil {
		return nil, err
	}
	paths := make([]string, 0, len(rendered))
	for name, content := range rendered {
		p := filepath.Join(dir, name)
		if err := writeAtomic(p, content); err != nil {
			return nil, fmt.Errorf("write rule file %s: %w", p, err)
		}
		paths = append(paths, p)
	}
	sort.Strings(paths)
	return paths, nil
}

func writeAtomic(path string, content []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if _, err := f.Write(content); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

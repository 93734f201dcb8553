package rules

import (
	"errors"
	"fmt"

	"github.com/prometheus/prometheus/model/labels"
)

// CheckConfig says whether ApplyConfig would accept c, without switching anything: the
// Alertmanager URLs, and every rule file and the pack loaded (each error names the file and
// line). A configuration reload checks every component before any of them switches.
func (e *Evaluator) CheckConfig(c Config) error {
	if _, _, err := alertmanagerConfigs(c.Rules.Alertmanagers); err != nil {
		return err
	}
	files := append([]string(nil), c.Files...)
	for name := range c.Pack {
		files = append(files, PackPrefix+name)
	}
	// The loader serves the pack's files by name; the running groups were loaded already, and
	// ApplyConfig sets the pack again before it loads anything.
	e.loader.set(c.Pack)
	if _, errs := e.manager.LoadGroups(c.interval(), labels.EmptyLabels(), "", nil, false, files...); len(errs) > 0 {
		return fmt.Errorf("rules: %w", errors.Join(errs...))
	}
	return nil
}

package config

import (
	"bufio"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestNoFleetwatchImports keeps configuration flowing one way (doc.go): the packages that are
// configured import this one, so this one imports none of fleetwatch's packages, not even
// shared plumbing under internal/ (which could import a domain package in turn). Test files
// may (an external test package could load a rule pack to check a threshold), so they are
// not read.
func TestNoFleetwatchImports(t *testing.T) {
	module := modulePath(t, filepath.Join("..", "..", "go.mod"))
	self := module + "/internal/config"
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		require.NoError(t, err)
		checked++
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			require.NoError(t, err)
			if path != self && (path == module || strings.HasPrefix(path, module+"/")) {
				t.Errorf("%s imports %s: internal/config must import no fleetwatch package; the packages it configures import it (see doc.go)", fset.Position(imp.Pos()), path)
			}
		}
	}
	require.NotZero(t, checked, "no source file read")
}

// modulePath reads the module path from the go.mod at path.
func modulePath(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(m), `"`)
		}
	}
	require.NoError(t, sc.Err())
	t.Fatalf("%s: no module line", path)
	return ""
}

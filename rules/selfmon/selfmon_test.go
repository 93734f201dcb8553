package selfmon

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fleetwatch/fleetwatch/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite deploy/kubernetes/base/prometheusrule.yaml")

// golden is the cluster install's PrometheusRule, committed.
var golden = filepath.Join("..", "..", "deploy", "kubernetes", "base", "prometheusrule.yaml")

// TestGolden: the install's PrometheusRule is what Manifest writes. After changing an alert,
// regenerate it with `go test ./rules/selfmon -run TestGolden -update`.
func TestGolden(t *testing.T) {
	want, err := Manifest()
	require.NoError(t, err)
	if *update {
		require.NoError(t, os.WriteFile(golden, want, 0o644))
	}
	got, err := os.ReadFile(golden)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "%s is stale; regenerate it with: go test ./rules/selfmon -run TestGolden -update", golden)
}

// TestPromtool: the real promtool accepts the rules (check rules) and they fire as
// testdata/selfmon_test.yml says (test rules).
func TestPromtool(t *testing.T) {
	promtool := testenv.Peer(t, "promtool")
	dir := t.TempDir()
	rf, err := RuleFile()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "fleetwatch-self.yml"), rf, 0o644))
	tests, err := os.ReadFile(filepath.Join("testdata", "selfmon_test.yml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "selfmon_test.yml"), tests, 0o644))

	out, err := exec.Command(promtool, "check", "rules", filepath.Join(dir, "fleetwatch-self.yml")).CombinedOutput()
	require.NoError(t, err, "promtool check rules:\n%s", out)
	require.Contains(t, string(out), fmt.Sprintf("SUCCESS: %d rules found", len(Groups()[0].Rules)))
	out, err = exec.Command(promtool, "test", "rules", filepath.Join(dir, "selfmon_test.yml")).CombinedOutput()
	require.NoError(t, err, "promtool test rules:\n%s", out)
}

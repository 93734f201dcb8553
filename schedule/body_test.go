package schedule

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBodyLimit: a placement or what-if body over MaxBodyBytes is a 413 naming the limit, never
// a decoder error; one just under it is judged on its content.
func TestBodyLimit(t *testing.T) {
	now := time.Now()
	_, _, srv := testService(t, &now, nil)
	for _, path := range []string{"/api/v1/placements", "/api/v1/whatif"} {
		// A valid JSON object padded with white space past the limit.
		big := `{"replicas": 1` + strings.Repeat(" ", MaxBodyBytes) + `}`
		code, out := post(t, srv.URL+path, big)
		require.Equal(t, http.StatusRequestEntityTooLarge, code, path)
		require.Contains(t, out["error"], fmt.Sprint(MaxBodyBytes), path)
		code, _ = post(t, srv.URL+path, `{"nonsense": 1}`+strings.Repeat(" ", 1000))
		require.Equal(t, http.StatusBadRequest, code, path)
	}
}

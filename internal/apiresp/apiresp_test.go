package apiresp

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEnvelopes(t *testing.T) {
	rec := httptest.NewRecorder()
	Success(rec, http.StatusOK, []int{1, 2})
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	require.JSONEq(t, `{"status":"success","data":[1,2]}`, rec.Body.String())

	rec = httptest.NewRecorder()
	Error(rec, http.StatusBadRequest, "bad_data", errors.New(`replicas: "x"`))
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.JSONEq(t, `{"status":"error","errorType":"bad_data","error":"replicas: \"x\""}`, rec.Body.String())

	// WriteEncoded writes the same envelope as Write does with the decoded data.
	data := []byte(`{"a":[1,"<&>"]}`)
	var v any
	require.NoError(t, json.Unmarshal(data, &v))
	for _, r := range []Response{{Status: "success"}, {Status: "error", ErrorType: "unsatisfiable", Error: "no \"room\" <here>"}} {
		fast, slow := httptest.NewRecorder(), httptest.NewRecorder()
		WriteEncoded(fast, 422, r, data)
		r.Data = v
		Write(slow, 422, r)
		require.Equal(t, slow.Code, fast.Code)
		require.JSONEq(t, slow.Body.String(), fast.Body.String())
	}
	rec = httptest.NewRecorder()
	WriteEncoded(rec, http.StatusOK, Response{Status: "success"}, nil)
	require.JSONEq(t, `{"status":"success"}`, rec.Body.String())
}

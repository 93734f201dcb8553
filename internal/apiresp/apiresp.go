// Package apiresp writes fleetwatch's own API answers in the Prometheus HTTP API's envelope:
// {"status": "success", "data": ...} or {"status": "error", "errorType": ..., "error": ...},
// as the incident, placement and what-if APIs answer.
package apiresp

import (
	"encoding/json"
	"net/http"
)

// Response is the envelope.
type Response struct {
	Status    string `json:"status"`
	Data      any    `json:"data,omitempty"`
	ErrorType string `json:"errorType,omitempty"`
	Error     string `json:"error,omitempty"`
}

// Write answers code with r as JSON.
func Write(w http.ResponseWriter, code int, r Response) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(r)
}

// Success answers code with data.
func Success(w http.ResponseWriter, code int, data any) {
	Write(w, code, Response{Status: "success", Data: data})
}

// Error answers code with the error's type and message.
func Error(w http.ResponseWriter, code int, typ string, err error) {
	Write(w, code, Response{Status: "error", ErrorType: typ, Error: err.Error()})
}

// WriteEncoded is Write with data already encoded as JSON (nil: no data). encoding/json would
// check a large encoded answer again byte by byte; this writes it as it is.
func WriteEncoded(w http.ResponseWriter, code int, r Response, data []byte) {
	r.Data = nil
	head, _ := json.Marshal(r) // strings only: cannot fail
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if data == nil {
		_, _ = w.Write(append(head, '\n'))
		return
	}
	out := make([]byte, 0, len(head)+len(data)+10)
	out = append(out, head[:len(head)-1]...) // without the closing brace
	out = append(out, `,"data":`...)
	out = append(out, data...)
	out = append(out, "}\n"...)
	_, _ = w.Write(out)
}

package jsonenc

import (
	"encoding/json"
	"testing"
)

// FuzzAppendString: AppendString and AppendStrings write what json.Marshal writes for a string
// and a string slice. Go's encoding/json writes \b and \f short; an encoder without them
// differed (found by correlate's FuzzAlertJSON).
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "\b\f\n\r\t\x00\x1f", `"\<>&`, "\u2028\u2029", "\xff\xfe", "é漢"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString([]byte("x"), s); string(got) != "x"+string(want) {
			t.Fatalf("AppendString(%q) = %s, json.Marshal: %s", s, got[1:], want)
		}
		for _, ss := range [][]string{nil, {}, {s}, {s, "", s}} {
			want, err := json.Marshal(ss)
			if err != nil {
				t.Fatal(err)
			}
			if got := AppendStrings(nil, ss); string(got) != string(want) {
				t.Fatalf("AppendStrings(%q) = %s, json.Marshal: %s", ss, got, want)
			}
		}
	})
}

// BenchmarkAppendString is the usual case: an ASCII sentence (an incident's explanation, an
// alert's description) with nothing to escape.
func BenchmarkAppendString(b *testing.B) {
	s := "KubePodCrashLooping of payments/payments-api-7d9f8c6b5-x2x9z on cluster prod-eu-west-1-a: container main restarted 5 times in the last 10 minutes."
	buf := make([]byte, 0, 256)
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		buf = AppendString(buf[:0], s)
	}
}

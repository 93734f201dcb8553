package hooks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Delivery headers.
const (
	// HeaderSignature carries one "v1=<hex HMAC-SHA256>" per secret, comma-separated, over
	// SignedContent: two while a secret is rotated, the new one first.
	HeaderSignature = "X-Fleetwatch-Signature"
	// HeaderTimestamp is when the delivery attempt was signed, in Unix seconds. A receiver
	// rejects one too far from its own clock: a captured delivery cannot be replayed later.
	HeaderTimestamp = "X-Fleetwatch-Timestamp"
	// HeaderEvent is the event type ("incident.opened"), HeaderDelivery the idempotency key:
	// the same on every attempt of one event to one receiver.
	HeaderEvent    = "X-Fleetwatch-Event"
	HeaderDelivery = "X-Fleetwatch-Delivery"
)

// DefaultTolerance is how far a delivery's timestamp may be from the receiver's clock (the
// value Stripe's libraries use).
const DefaultTolerance = 5 * time.Minute

// SignedContent is what a signature covers: the timestamp, a dot, and the body as sent.
func SignedContent(timestamp string, body []byte) []byte {
	return append([]byte(timestamp+"."), body...)
}

// Sign returns the signature header for body sent at ts, one v1 signature per secret.
func Sign(secrets []string, ts time.Time, body []byte) (timestamp, signature string) {
	timestamp = strconv.FormatInt(ts.Unix(), 10)
	msg := SignedContent(timestamp, body)
	sigs := make([]string, len(secrets))
	for i, s := range secrets {
		sigs[i] = "v1=" + mac(s, msg)
	}
	return timestamp, strings.Join(sigs, ",")
}

func mac(secret string, msg []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(msg)
	return hex.EncodeToString(m.Sum(nil))
}

// Verification errors.
var (
	ErrNoSignature = errors.New("no v1 signature matches the body")
	ErrTimestamp   = errors.New("timestamp outside the tolerance")
)

// Verify checks a delivery the way a receiver should: the timestamp within tolerance of now,
// and one of the header's v1 signatures made with one of secrets over the timestamp and the
// body, compared in constant time. It is the receiving side of Sign, for Go receivers and
// for fleetwatch's tests; examples/hooks/verify.sh does the same with openssl.
func Verify(secrets []string, timestamp, signature string, body []byte, tolerance time.Duration, now time.Time) error {
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %q is not Unix seconds", HeaderTimestamp, timestamp)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed %s from now, tolerance %s", ErrTimestamp, d.Round(time.Second), tolerance)
	}
	msg := SignedContent(timestamp, body)
	for _, part := range strings.Split(signature, ",") {
		got, ok := strings.CutPrefix(strings.TrimSpace(part), "v1=")
		if !ok {
			continue
		}
		for _, s := range secrets {
			if hmac.Equal([]byte(got), []byte(mac(s, msg))) {
				return nil
			}
		}
	}
	return ErrNoSignature
}

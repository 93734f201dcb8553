package clusterauth

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/fleetwatch/fleetwatch/internal/access"
	"github.com/fleetwatch/fleetwatch/internal/config"
)

// Challenge is the WWW-Authenticate value to send with a 401: clusters may use either scheme.
const Challenge = access.Challenge

// Table maps credentials to cluster names. Secrets are kept only as SHA-256 digests and
// compared in constant time. A Table is immutable, so it is safe for concurrent use; replace it
// as a whole when the configuration changes. The zero Table and a nil *Table accept nobody.
type Table struct {
	bearer map[[sha256.Size]byte]string
	basic  map[string]basicCred
}

type basicCred struct {
	password [sha256.Size]byte
	cluster  string
}

// New builds the table from the clusters' remote_write credentials. Clusters without
// credentials (federated ones) cannot authenticate.
func New(clusters []*config.ClusterConfig) *Table {
	t := &Table{bearer: map[[sha256.Size]byte]string{}, basic: map[string]basicCred{}}
	for _, c := range clusters {
		rw := c.RemoteWrite
		switch {
		case rw == nil:
		case rw.BearerToken != "":
			t.bearer[sha256.Sum256([]byte(rw.BearerToken))] = c.Name
		case rw.BasicAuth != nil:
			t.basic[rw.BasicAuth.Username] = basicCred{password: sha256.Sum256([]byte(rw.BasicAuth.Password)), cluster: c.Name}
		}
	}
	return t
}

// Authenticate returns the cluster whose credentials req carries. A request with basic auth is
// judged by it alone, otherwise by its bearer token.
func (t *Table) Authenticate(req *http.Request) (cluster string, ok bool) {
	if t == nil {
		return "", false
	}
	if user, pass, ok := req.BasicAuth(); ok {
		cred, found := t.basic[user]
		sum := sha256.Sum256([]byte(pass))
		// Compare even for an unknown user, so the time taken does not tell which users exist.
		if subtle.ConstantTimeCompare(sum[:], cred.password[:]) == 1 && found {
			return cred.cluster, true
		}
		return "", false
	}
	const prefix = "Bearer "
	h := req.Header.Get("Authorization")
	if len(h) <= len(prefix) || h[:len(prefix)] != prefix {
		return "", false
	}
	cluster, ok = t.bearer[sha256.Sum256([]byte(h[len(prefix):]))]
	return cluster, ok
}

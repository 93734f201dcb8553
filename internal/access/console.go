package access

import "fmt"

// EnforceQuery limits a PromQL expression to the identity's clusters, as the query API does
// for a team-scoped identity (ClusterMatcher on label, injected into every selector), for
// handlers that run PromQL themselves rather than through /api/v1/query (the web console's
// /graph). An unscoped identity's expression is returned as it is; a scoped identity whose
// scope matches no cluster gets an error rather than the whole fleet.
func (id Identity) EnforceQuery(q string, label string) (string, error) {
	if !id.scoped {
		return q, nil
	}
	if len(id.clusters) == 0 {
		return "", fmt.Errorf("%s is limited to clusters, and its cluster_selector matches none", id)
	}
	m, err := ClusterMatcher(label, id.clusters)
	if err != nil {
		return "", err
	}
	return EnforceQuery(q, m)
}

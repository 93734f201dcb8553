package query

import (
	"fmt"
	"net/url"

	commoncfg "github.com/prometheus/common/config"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage/remote"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// NewRemoteSources builds the remote queryables of a query configuration: Prometheus
// remote-read endpoints, read through Prometheus's own remote-read client, and Thanos StoreAPI
// endpoints.
func NewRemoteSources(cfg config.QueryConfig) ([]RemoteSource, error) {
	var out []RemoteSource
	for _, rr := range cfg.RemoteRead {
		u, err := url.Parse(rr.URL)
		if err != nil {
			return nil, fmt.Errorf("remote_read %q: url: %w", rr.Name, err)
		}
		client, err := remote.NewReadClient(rr.Name, &remote.ClientConfig{
			URL:              &commoncfg.URL{URL: u},
			Timeout:          rr.Timeout,
			HTTPClientConfig: rr.HTTPClientConfig,
			// Prometheus's default; zero would reject every streamed frame.
			ChunkedReadLimit: promconfig.DefaultChunkedReadLimit,
		})
		if err != nil {
			return nil, fmt.Errorf("remote_read %q: %w", rr.Name, err)
		}
		// readRecent: the remote holds data fleetwatch does not, recent or not.
		out = append(out, RemoteSource{Name: rr.Name, Queryable: remote.NewSampleAndChunkQueryableClient(client, labels.EmptyLabels(), nil, true, nil)})
	}
	for _, sc := range cfg.Stores {
		q, conn, err := newStoreAPIQueryable(sc)
		if err != nil {
			closeSources(out)
			return nil, fmt.Errorf("store %q: %w", sc.Name, err)
		}
		out = append(out, RemoteSource{Name: sc.Name, Queryable: q, Closer: conn})
	}
	return out, nil
}

// closeSources releases the connections of sources that are no longer used.
func closeSources(rs []RemoteSource) {
	for _, r := range rs {
		if r.Closer != nil {
			_ = r.Closer.Close()
		}
	}
}

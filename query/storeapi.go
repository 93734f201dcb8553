package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/go-kit/log"
	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/storage"
	"github.com/thanos-io/thanos/pkg/dedup"
	thanosquery "github.com/thanos-io/thanos/pkg/query"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// newStoreAPIQueryable reads a Thanos StoreAPI endpoint (a sidecar, Receive, Store Gateway or
// another Querier) through Thanos's own querier, which turns StoreAPI chunks into series the
// PromQL engine reads. Deduplication is not done here but once, over the merged view.
func newStoreAPIQueryable(sc *config.StoreConfig) (storage.Queryable, io.Closer, error) {
	creds := insecure.NewCredentials()
	if sc.TLS != nil {
		tlsCfg, err := commoncfg.NewTLSConfig(sc.TLS)
		if err != nil {
			return nil, nil, fmt.Errorf("tls_config: %w", err)
		}
		creds = credentials.NewTLS(tlsCfg)
	}
	// NewClient does not connect: a store that is down is a failing source (a warning, or an
	// error without partial response), not a config error.
	conn, err := grpc.NewClient(sc.Address, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, nil, fmt.Errorf("address %s: %w", sc.Address, err)
	}
	server := &clientAsServer{client: storepb.NewStoreClient(conn)}
	create := thanosquery.NewQueryableCreator(log.NewNopLogger(), nil, server, 4, time.Duration(sc.Timeout), dedup.AlgorithmPenalty, 1)
	// No dedup and no partial response inside: both are decided once, over the merged view.
	return create(false, nil, nil, 0, false, false, nil, thanosquery.NoopSeriesStatsReporter), conn, nil
}

// clientAsServer lets Thanos's querier, which reads a StoreServer (normally its in-process
// proxy), read a remote StoreAPI client instead.
type clientAsServer struct {
	client storepb.StoreClient
}

func (c *clientAsServer) Series(req *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	stream, err := c.client.Series(srv.Context(), req)
	if err != nil {
		return err
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := srv.Send(resp); err != nil {
			return err
		}
	}
}

func (c *clientAsServer) LabelNames(ctx context.Context, req *storepb.LabelNamesRequest) (*storepb.LabelNamesResponse, error) {
	return c.client.LabelNames(ctx, req)
}

func (c *clientAsServer) LabelValues(ctx context.Context, req *storepb.LabelValuesRequest) (*storepb.LabelValuesResponse, error) {
	return c.client.LabelValues(ctx, req)
}

var _ storepb.StoreServer = (*clientAsServer)(nil)

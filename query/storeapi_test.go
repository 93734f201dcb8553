package query

import (
	"context"
	"fmt"
	"math"
	"net"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/stretchr/testify/require"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// chunkStore serves series over the StoreAPI, one message per series, as Thanos's stores do:
// each series has chunks of samples of its own (value = series index).
type chunkStore struct {
	storepb.UnimplementedStoreServer
	series, samples int
}

func (s *chunkStore) Series(_ *storepb.SeriesRequest, srv storepb.Store_SeriesServer) error {
	for i := range s.series {
		var chunks []storepb.AggrChunk
		for c := 0; c < s.samples; c += 120 {
			chk := chunkenc.NewXORChunk()
			app, err := chk.Appender()
			if err != nil {
				return err
			}
			end := min(c+120, s.samples)
			for j := c; j < end; j++ {
				app.Append(int64(j)*15_000, float64(i)+float64(j)/1e6)
			}
			chunks = append(chunks, storepb.AggrChunk{MinTime: int64(c) * 15_000, MaxTime: int64(end-1) * 15_000,
				Raw: &storepb.Chunk{Type: storepb.Chunk_XOR, Data: chk.Bytes()}})
		}
		ls := []labelpb.ZLabel{{Name: "__name__", Value: "m"}, {Name: "i", Value: fmt.Sprintf("%05d", i)}}
		if err := srv.Send(storepb.NewSeriesResponse(&storepb.Series{Labels: ls, Chunks: chunks})); err != nil {
			return err
		}
	}
	return nil
}

// TestStoreAPIChunksSurviveLaterMessages: every series read from a StoreAPI keeps its own
// samples once later messages have arrived. Thanos's decoder leaves chunk data pointing into
// the buffer a message was decoded from, and gRPC hands that buffer to the next messages:
// without a codec that gives each message its own copy, the series read first came back
// holding later series' bytes (or undecodable ones: "EOF").
func TestStoreAPIChunksSurviveLaterMessages(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := grpc.NewServer()
	const series, samples = 500, 300
	storepb.RegisterStoreServer(srv, &chunkStore{series: series, samples: samples})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	q, closer, err := newStoreAPIQueryable(&config.StoreConfig{Name: "s", Address: lis.Addr().String(), Timeout: model.Duration(time.Minute)})
	require.NoError(t, err)
	defer closer.Close()
	querier, err := q.Querier(0, math.MaxInt64)
	require.NoError(t, err)
	set := querier.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	n := 0
	var it chunkenc.Iterator
	for set.Next() {
		s := set.At()
		var i int
		_, err := fmt.Sscanf(s.Labels().Get("i"), "%d", &i)
		require.NoError(t, err)
		it = s.Iterator(it)
		j := 0
		for it.Next() != chunkenc.ValNone {
			ts, v := it.At()
			require.Equal(t, int64(j)*15_000, ts, "series %d sample %d", i, j)
			require.Equal(t, float64(i)+float64(j)/1e6, v, "series %d sample %d", i, j)
			j++
		}
		require.NoError(t, it.Err(), "series %d", i)
		require.Equal(t, samples, j, "series %d", i)
		n++
	}
	require.NoError(t, set.Err())
	require.Equal(t, series, n)
}

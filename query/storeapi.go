package query

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb/chunkenc"
	"github.com/prometheus/prometheus/util/annotations"
	"github.com/thanos-io/thanos/pkg/store/labelpb"
	"github.com/thanos-io/thanos/pkg/store/storepb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	"github.com/fleetwatch/fleetwatch/internal/config"
)

// newStoreAPIQueryable reads a Thanos StoreAPI endpoint (a sidecar, Receive, Store Gateway or
// another Querier). Chunks are decoded by Prometheus's chunk encodings (chunkenc), merged where
// they overlap by its chain iterator.
//
// Labels are converted here, by copying, rather than with storepb.Series.PromLabels: that is
// an unsafe cast which is only right when Prometheus's labels are built with the slicelabels
// tag, as Thanos builds itself; fleetwatch keeps Prometheus's default, more compact
// stringlabels, where the cast reads garbage.
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
	conn, err := grpc.NewClient(sc.Address, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(ownBufferCodec{encoding.GetCodecV2("proto")})))
	if err != nil {
		return nil, nil, fmt.Errorf("address %s: %w", sc.Address, err)
	}
	return &storeQueryable{client: storepb.NewStoreClient(conn), timeout: time.Duration(sc.Timeout)}, conn, nil
}

// ownBufferCodec decodes each message from a copy of its bytes that belongs to the message:
// Thanos's decoders leave chunk data (and, in Thanos's own slicelabels builds, label strings)
// pointing into the buffer they decoded, while gRPC returns its receive buffers to a pool once
// a message is decoded and fills them with the next ones, which turned chunks read later into
// garbage ("EOF" from the chunk decoder, or wrong counts).
type ownBufferCodec struct{ encoding.CodecV2 }

func (c ownBufferCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(interface{ Unmarshal([]byte) error }); ok {
		return m.Unmarshal(data.Materialize())
	}
	return c.CodecV2.Unmarshal(data, v)
}

// rawAggrs asks for raw chunks: what Thanos's querier asks for when no function hints at a
// downsampled aggregate; a store without downsampled data answers with raw chunks.
var rawAggrs = []storepb.Aggr{storepb.Aggr_COUNT, storepb.Aggr_SUM}

type storeQueryable struct {
	client  storepb.StoreClient
	timeout time.Duration
}

func (s *storeQueryable) Querier(mint, maxt int64) (storage.Querier, error) {
	return &storeQuerier{storeQueryable: s, mint: mint, maxt: maxt}, nil
}

type storeQuerier struct {
	*storeQueryable
	mint, maxt int64
}

func (q *storeQuerier) Select(ctx context.Context, _ bool, hints *storage.SelectHints, ms ...*labels.Matcher) storage.SeriesSet {
	sms, err := storepb.PromMatchersToMatchers(ms...)
	if err != nil {
		return storage.ErrSeriesSet(fmt.Errorf("convert matchers: %w", err))
	}
	mint, maxt := q.mint, q.maxt
	if hints != nil {
		mint, maxt = hints.Start, hints.End
	}
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	stream, err := q.client.Series(ctx, &storepb.SeriesRequest{
		MinTime:                 mint,
		MaxTime:                 maxt,
		Matchers:                sms,
		Aggregates:              rawAggrs,
		PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT,
	})
	if err != nil {
		return storage.ErrSeriesSet(fmt.Errorf("series: %w", err))
	}
	var series []storage.Series
	var warns annotations.Annotations
	b := labels.NewScratchBuilder(16)
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return storage.ErrSeriesSet(fmt.Errorf("series: %w", err))
		}
		if w := resp.GetWarning(); w != "" {
			warns.Add(errors.New(w))
			continue
		}
		s := resp.GetSeries()
		if s == nil {
			continue
		}
		lset := copyLabels(&b, s.Labels)
		chks, err := rawChunks(s.Chunks)
		if err != nil {
			return storage.ErrSeriesSet(fmt.Errorf("series %s: %w", lset, err))
		}
		// A store may split one series over several frames; they come one after another.
		if n := len(series); n > 0 && labels.Equal(series[n-1].Labels(), lset) {
			last := series[n-1].(*storeSeries)
			last.chunks = append(last.chunks, chks...)
			continue
		}
		series = append(series, &storeSeries{lset: lset, chunks: chks, mint: q.mint, maxt: q.maxt})
	}
	return &listSeriesSet{series: series, idx: -1, warnings: warns}
}

// rawChunks decodes a series' chunks. Only raw chunks come back: the request asks for raw
// resolution (no MaxResolutionWindow), so a store never answers with downsampled aggregates.
func rawChunks(in []storepb.AggrChunk) ([]chunkenc.Iterable, error) {
	out := make([]chunkenc.Iterable, 0, len(in))
	for _, c := range in {
		if c.Raw == nil {
			return nil, fmt.Errorf("chunk %d-%d has no raw data (a downsampled aggregate, which fleetwatch does not ask for)", c.MinTime, c.MaxTime)
		}
		var enc chunkenc.Encoding
		switch c.Raw.Type {
		case storepb.Chunk_XOR:
			enc = chunkenc.EncXOR
		case storepb.Chunk_HISTOGRAM:
			enc = chunkenc.EncHistogram
		case storepb.Chunk_FLOAT_HISTOGRAM:
			enc = chunkenc.EncFloatHistogram
		default:
			return nil, fmt.Errorf("chunk %d-%d: unknown encoding %v", c.MinTime, c.MaxTime, c.Raw.Type)
		}
		// Data points into the message's own buffer (ownBufferCodec).
		chk, err := chunkenc.FromData(enc, c.Raw.Data)
		if err != nil {
			return nil, fmt.Errorf("chunk %d-%d: %w", c.MinTime, c.MaxTime, err)
		}
		out = append(out, chk)
	}
	return out, nil
}

// storeSeries is one series from a store: its chunks, sorted by time and possibly
// overlapping (the chain iterator merges them), read within the querier's range.
type storeSeries struct {
	lset       labels.Labels
	chunks     []chunkenc.Iterable
	mint, maxt int64
}

func (s *storeSeries) Labels() labels.Labels { return s.lset }

func (s *storeSeries) Iterator(it chunkenc.Iterator) chunkenc.Iterator {
	return &boundedIterator{it: storage.ChainSampleIteratorFromIterables(nil, s.chunks), mint: s.mint, maxt: s.maxt}
}

func copyLabels(b *labels.ScratchBuilder, zl []labelpb.ZLabel) labels.Labels {
	b.Reset()
	for _, l := range zl {
		b.Add(l.Name, l.Value)
	}
	b.Sort()
	return b.Labels()
}

func (q *storeQuerier) LabelValues(ctx context.Context, name string, _ *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	sms, err := storepb.PromMatchersToMatchers(ms...)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	resp, err := q.client.LabelValues(ctx, &storepb.LabelValuesRequest{Label: name, Start: q.mint, End: q.maxt, Matchers: sms, PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT})
	if err != nil {
		return nil, nil, fmt.Errorf("label values: %w", err)
	}
	return cloneStrings(resp.Values), warnings(resp.Warnings), nil
}

func (q *storeQuerier) LabelNames(ctx context.Context, _ *storage.LabelHints, ms ...*labels.Matcher) ([]string, annotations.Annotations, error) {
	sms, err := storepb.PromMatchersToMatchers(ms...)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	resp, err := q.client.LabelNames(ctx, &storepb.LabelNamesRequest{Start: q.mint, End: q.maxt, Matchers: sms, PartialResponseStrategy: storepb.PartialResponseStrategy_ABORT})
	if err != nil {
		return nil, nil, fmt.Errorf("label names: %w", err)
	}
	return cloneStrings(resp.Names), warnings(resp.Warnings), nil
}

func (q *storeQuerier) Close() error { return nil }

// cloneStrings detaches strings from the gRPC message buffer they may point into.
func cloneStrings(in []string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = string([]byte(s))
	}
	return out
}

func warnings(ws []string) annotations.Annotations {
	var a annotations.Annotations
	for _, w := range ws {
		a.Add(errors.New(w))
	}
	return a
}

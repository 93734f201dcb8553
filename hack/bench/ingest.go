package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/fleetwatch/fleetwatch/hack/internal/benchproc"
	"github.com/fleetwatch/fleetwatch/hack/internal/stats"
)

// ingestResult is one measured phase against one target.
type ingestResult struct {
	Phase         string  `json:"phase"`
	Samples       int     `json:"samples"`
	Requests      int     `json:"requests"`
	Bytes         int64   `json:"compressed_bytes"`
	Seconds       float64 `json:"seconds"`
	SamplesPerSec float64 `json:"samples_per_sec"`
	CPUSeconds    float64 `json:"cpu_seconds"`
	CPUPerMillion float64 `json:"cpu_seconds_per_million_samples"`
	ReqP50ms      float64 `json:"request_p50_ms"`
	ReqP99ms      float64 `json:"request_p99_ms"`
	ReqMaxms      float64 `json:"request_max_ms"`
	// BenchCores and OtherCores are the average CPU cores the bench itself and every other
	// process of the machine used during the phase: other load makes wall-clock numbers noisy.
	BenchCores float64 `json:"bench_cores"`
	OtherCores float64 `json:"other_cores"`
}

func newHTTPClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns * 4
	tr.MaxIdleConnsPerHost = conns * 2
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// send posts every request of a phase with `workers` concurrent senders. Worker i owns the
// streams whose index is i modulo workers and sends them round-robin, each stream in order.
// Any answer other than 2xx fails the run, as does a 2.0 answer that reports fewer samples
// written than sent.
func send(ctx context.Context, client *http.Client, s *server, p *phase, workers int) (ingestResult, error) {
	url := "http://" + s.Addr + "/api/v1/write"
	ct := ctV1
	if p.proto == protoV2 {
		ct = ctV2
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		once     sync.Once
		firstErr error
		wg       sync.WaitGroup
		latMu    sync.Mutex
		lats     []time.Duration
	)
	fail := func(err error) {
		once.Do(func() { firstErr = err; cancel() })
	}
	cpu0, err := benchproc.TakeCPU(s.PIDs()...)
	if err != nil {
		return ingestResult{}, err
	}
	start := time.Now()
	for w := range workers {
		var mine []*stream
		for j := w; j < len(p.streams); j += workers {
			mine = append(mine, p.streams[j])
		}
		if len(mine) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; ; r++ {
				sent := false
				for _, st := range mine {
					if r >= len(st.reqs) {
						continue
					}
					sent = true
					t0 := time.Now()
					if err := post(ctx, client, url, ct, s.tokens[st.cluster], p.proto, &st.reqs[r]); err != nil {
						fail(fmt.Errorf("%s %s: %w", s.Name, p.name, err))
						return
					}
					lat := time.Since(t0)
					latMu.Lock()
					lats = append(lats, lat)
					latMu.Unlock()
				}
				if !sent {
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, cerr := benchproc.TakeCPU(s.PIDs()...)
	if firstErr != nil {
		return ingestResult{}, firstErr
	}
	if cerr != nil {
		return ingestResult{}, cerr
	}
	r := ingestResult{
		Phase:      p.name,
		Samples:    p.samples,
		Requests:   p.requests,
		Bytes:      p.bytes,
		Seconds:    elapsed.Seconds(),
		CPUSeconds: cpu1.Server - cpu0.Server,
	}
	r.BenchCores = (cpu1.Self - cpu0.Self) / r.Seconds
	r.OtherCores = max(0, (cpu1.Machine-cpu0.Machine)-r.CPUSeconds-(cpu1.Self-cpu0.Self)) / r.Seconds
	r.SamplesPerSec = float64(p.samples) / r.Seconds
	r.ReqP50ms = stats.Ms(stats.Percentile(lats, 0.5))
	r.ReqP99ms = stats.Ms(stats.Percentile(lats, 0.99))
	r.ReqMaxms = stats.Ms(stats.Percentile(lats, 1))
	r.CPUPerMillion = r.CPUSeconds / float64(p.samples) * 1e6
	return r, nil
}

func post(ctx context.Context, client *http.Client, url, ct, token, protocol string, rq *request) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(rq.body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("User-Agent", "fleetwatch-bench")
	if protocol == protoV2 {
		req.Header.Set("X-Prometheus-Remote-Write-Version", "2.0.0")
	} else {
		req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("cluster %s: HTTP %d: %s", rq.cluster, resp.StatusCode, bytes.TrimSpace(body))
	}
	if protocol == protoV2 {
		if h := resp.Header.Get("X-Prometheus-Remote-Write-Samples-Written"); h != "" {
			if n, err := strconv.Atoi(h); err != nil || n != rq.samples {
				return fmt.Errorf("cluster %s: HTTP %d but %q samples written of %d sent", rq.cluster, resp.StatusCode, h, rq.samples)
			}
		}
	}
	return nil
}

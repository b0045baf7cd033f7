// tlsload: a TLS handshake load generator for bench/run-tls.
//
// C workers each loop for D: open a TCP connection, do a TLS handshake, send
// "GET / HTTP/1.0", read the response to EOF, close. In -mode full a worker keeps no
// session, so every handshake is a full one. In -mode resumed each worker keeps the last
// session (ticket) it got and offers it on its next connection: after its first connection
// every handshake resumes, unless the server refuses the ticket (counted as "full").
//
// Why not `openssl s_time` or wrk: s_time runs one connection at a time, and wrk and h2load
// always resume. OpenSSL 3.0's client side also costs ~0.9 ms of CPU per full handshake
// here, more than the servers being measured, so it could not load them from one CPU.
// Go's TLS client costs a fraction of that, which leaves the servers as the bottleneck.
//
// Output: one JSON object on stdout.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Connections int64            `json:"connections"`
	Resumed     int64            `json:"resumed"`
	Full        int64            `json:"full"`
	Errors      int64            `json:"errors"`
	ErrorKinds  map[string]int64 `json:"error_kinds"`
	Seconds     float64          `json:"seconds"`
	Rate        float64          `json:"rate"`
	Version     string           `json:"version"`
	Cipher      string           `json:"cipher"`
	P50ms       float64          `json:"p50_ms"`
	P99ms       float64          `json:"p99_ms"`
}

func main() {
	addr := flag.String("addr", "127.0.0.1:443", "host:port")
	conc := flag.Int("c", 32, "concurrent connections")
	dur := flag.Duration("d", 5*time.Second, "duration")
	mode := flag.String("mode", "full", "full or resumed")
	maxVer := flag.String("tls", "1.3", "highest TLS version: 1.2 or 1.3")
	flag.Parse()

	base := &tls.Config{
		InsecureSkipVerify: true, // the handshake signature is still checked; the chain is not
		ServerName:         "localhost",
		MinVersion:         tls.VersionTLS12,
		MaxVersion:         tls.VersionTLS13,
	}
	if *maxVer == "1.2" {
		base.MaxVersion = tls.VersionTLS12
	}
	request := []byte("GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")

	var conns, resumed, full, errs int64
	var mu sync.Mutex
	kinds := map[string]int64{}
	var lat []time.Duration
	var state tls.ConnectionState
	var stateOnce sync.Once
	fail := func(kind string) {
		atomic.AddInt64(&errs, 1)
		mu.Lock()
		kinds[kind]++
		mu.Unlock()
	}

	start := time.Now()
	deadline := start.Add(*dur)
	var wg sync.WaitGroup
	for i := 0; i < *conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := base.Clone()
			if *mode == "resumed" {
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}
			buf := make([]byte, 16384)
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t0 := time.Now()
				raw, err := net.DialTimeout("tcp", *addr, 5*time.Second)
				if err != nil {
					fail("connect")
					time.Sleep(10 * time.Millisecond)
					continue
				}
				raw.SetDeadline(time.Now().Add(10 * time.Second))
				c := tls.Client(raw, cfg)
				if err := c.Handshake(); err != nil {
					fail("handshake")
					raw.Close()
					continue
				}
				if _, err := c.Write(request); err != nil {
					fail("write")
					c.Close()
					continue
				}
				r := bufio.NewReader(c)
				head, err := r.Peek(12)
				if err != nil || !(bytes.HasPrefix(head, []byte("HTTP/1.1 200")) || bytes.HasPrefix(head, []byte("HTTP/1.0 200"))) {
					fail("bad_response")
					c.Close()
					continue
				}
				for {
					_, err := r.Read(buf)
					if err == io.EOF {
						break
					}
					if err != nil {
						break // a reset after the response is read is fine
					}
				}
				st := c.ConnectionState()
				c.Close()
				mine = append(mine, time.Since(t0))
				atomic.AddInt64(&conns, 1)
				if st.DidResume {
					atomic.AddInt64(&resumed, 1)
				} else {
					atomic.AddInt64(&full, 1)
				}
				stateOnce.Do(func() { state = st })
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	sort.Slice(lat, func(a, b int) bool { return lat[a] < lat[b] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	res := result{
		Connections: conns, Resumed: resumed, Full: full, Errors: errs, ErrorKinds: kinds,
		Seconds: secs, Rate: float64(conns) / secs,
		Version: map[uint16]string{tls.VersionTLS12: "TLSv1.2", tls.VersionTLS13: "TLSv1.3"}[state.Version], Cipher: tls.CipherSuiteName(state.CipherSuite),
		P50ms: pct(0.50), P99ms: pct(0.99),
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

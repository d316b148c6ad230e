package fault

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// natsProxy stands between one NATS client (a gateway, the publisher) and
// the cluster: one listener per node, each forwarding to that node. cut
// closes every forwarded connection and makes the listeners close new ones
// at once (a partition that refuses, not one that hangs); heal lets them
// through again.
//
// Server-to-client traffic is parsed as the NATS protocol so INFO loses its
// connect_urls: otherwise nats.go would learn the nodes' real addresses
// from the cluster's gossip and reconnect around the proxy.
type natsProxy struct {
	name    string
	lns     []net.Listener
	down    atomic.Bool
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	refused atomic.Int64
}

func newNATSProxy(t *testing.T, name string, targets []string) *natsProxy {
	t.Helper()
	p := &natsProxy{name: name, conns: map[net.Conn]struct{}{}}
	for _, target := range targets {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p.lns = append(p.lns, ln)
		go p.accept(ln, target)
	}
	t.Cleanup(func() {
		for _, ln := range p.lns {
			ln.Close()
		}
		p.cut()
	})
	return p
}

// urls lists the proxy's listeners, the one for node first first.
func (p *natsProxy) urls(first int) string {
	var us []string
	for k := range p.lns {
		us = append(us, "nats://"+p.lns[(first+k)%len(p.lns)].Addr().String())
	}
	return strings.Join(us, ",")
}

func (p *natsProxy) accept(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if p.down.Load() {
			p.refused.Add(1)
			c.Close()
			continue
		}
		go p.forward(c, target)
	}
}

func (p *natsProxy) forward(c net.Conn, target string) {
	u, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.down.Load() { // cut while dialling
		p.mu.Unlock()
		p.refused.Add(1)
		c.Close()
		u.Close()
		return
	}
	p.conns[c], p.conns[u] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := func() {
		c.Close()
		u.Close()
		p.mu.Lock()
		delete(p.conns, c)
		delete(p.conns, u)
		p.mu.Unlock()
	}
	go func() { io.Copy(u, c); done() }()
	copyServerToClient(c, u)
	done()
}

// cut closes every forwarded connection and refuses new ones until heal;
// it returns how many connections it closed (two sockets each).
func (p *natsProxy) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down.Store(true)
	n := len(p.conns) / 2
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	return n
}

func (p *natsProxy) heal() { p.down.Store(false) }

// copyServerToClient copies the NATS server-to-client protocol from src to
// dst, dropping connect_urls and ws_connect_urls from every INFO. Message
// payloads (MSG, HMSG) are copied by their byte counts, so a payload that
// looks like INFO is never touched.
func copyServerToClient(dst io.Writer, src io.Reader) error {
	br := bufio.NewReaderSize(src, 64<<10)
	bw := bufio.NewWriterSize(dst, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			bw.Write(line)
			bw.Flush()
			return err
		}
		op, _, _ := bytes.Cut(line, []byte(" "))
		switch strings.ToUpper(string(bytes.TrimSpace(op))) {
		case "INFO":
			line, err = stripConnectURLs(line)
			if err != nil {
				return err
			}
			if _, err := bw.Write(line); err != nil {
				return err
			}
		case "MSG", "HMSG":
			f := strings.Fields(string(line))
			n, err := strconv.ParseInt(f[len(f)-1], 10, 64)
			if err != nil {
				return fmt.Errorf("natsProxy: bad %s line %q", f[0], line)
			}
			if _, err := bw.Write(line); err != nil {
				return err
			}
			if _, err := io.CopyN(bw, br, n+2); err != nil { // payload and CRLF
				bw.Flush()
				return err
			}
		default:
			if _, err := bw.Write(line); err != nil {
				return err
			}
		}
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return err
			}
		}
	}
}

func stripConnectURLs(line []byte) ([]byte, error) {
	body := bytes.TrimSpace(line[len("INFO"):])
	var info map[string]json.RawMessage
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, fmt.Errorf("natsProxy: bad INFO %q: %v", line, err)
	}
	delete(info, "connect_urls")
	delete(info, "ws_connect_urls")
	b, err := json.Marshal(info)
	if err != nil {
		return nil, err
	}
	return append(append([]byte("INFO "), b...), '\r', '\n'), nil
}

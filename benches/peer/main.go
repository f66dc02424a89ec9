// Command peer is the benchmark's reference point on the opamp-go `server` package: the minimal
// OpAMP server most users start from. Agents live in an in-memory map keyed by instance uid; the
// config is one file whose hash is its sha256; a new config (POST /push) goes at once over
// WebSocket to every agent whose reported hash differs, and to plain-HTTP agents in the answer
// to their next poll. An agent the peer knows nothing about (its map is empty after a restart)
// is asked for its full state, as the opamp-go example server does.
//
//	peer -listen 127.0.0.1:4320 [-generation N] [-config-bytes N]
//
// Endpoints, all on the one listener:
//
//	/v1/opamp    OpAMP over WebSocket and plain HTTP (opamp-go)
//	POST /push   change the config (next generation) and push it; answers 202
//	GET /stats   {"agents", "ws_connections", "pushes", "full_state_requests", "generation", "config_hash"}
//
// It prints one JSON line {"event":"listening","addr":"..."} on stdout once it listens, and
// stops on SIGTERM or SIGINT.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/open-telemetry/opamp-go/protobufs"
	"github.com/open-telemetry/opamp-go/server"
	"github.com/open-telemetry/opamp-go/server/types"
)

const (
	opampPath  = "/v1/opamp"
	configName = "collector.yaml"
	serverCaps = uint64(protobufs.ServerCapabilities_ServerCapabilities_AcceptsStatus |
		protobufs.ServerCapabilities_ServerCapabilities_OffersRemoteConfig |
		protobufs.ServerCapabilities_ServerCapabilities_AcceptsEffectiveConfig)
	acceptsRemoteConfig = uint64(protobufs.AgentCapabilities_AgentCapabilities_AcceptsRemoteConfig)
	reportFullState     = uint64(protobufs.ServerToAgentFlags_ServerToAgentFlags_ReportFullState)
)

type agent struct {
	// The agent's WebSocket connection; nil for plain-HTTP agents and after a close.
	conn      types.Connection
	seq       uint64
	hash      []byte
	hasStatus bool
	hasDesc   bool
	// The config hash already sent on conn, so a WebSocket agent gets each config once.
	sentHash []byte
}

type peer struct {
	mu          sync.Mutex
	agents      map[string]*agent
	byConn      map[types.Connection]string
	generation  int
	configBytes int
	config      *protobufs.AgentRemoteConfig
	pushes      atomic.Uint64
	fullStates  atomic.Uint64
}

// makeConfig renders a Collector config of about `size` bytes that differs per generation.
func makeConfig(generation, size int) *protobufs.AgentRemoteConfig {
	var b strings.Builder
	fmt.Fprintf(&b, `receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
      http:
        endpoint: 0.0.0.0:4318
processors:
  batch:
    timeout: 10s
    send_batch_size: 8192
  memory_limiter:
    check_interval: 1s
    limit_percentage: 80
  resource:
    attributes:
      - key: deployment.generation
        value: "%d"
        action: upsert
`, generation)
	for i := 0; b.Len() < size-200; i++ {
		fmt.Fprintf(&b, "      - key: bench.attribute.%04d\n        value: value-%04d\n        action: insert\n", i, i)
	}
	b.WriteString(`exporters:
  otlp:
    endpoint: tempo-distributor.monitoring.svc:4317
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, resource, batch]
      exporters: [otlp]
`)
	body := []byte(b.String())
	sum := sha256.Sum256(body)
	return &protobufs.AgentRemoteConfig{
		Config: &protobufs.AgentConfigMap{ConfigMap: map[string]*protobufs.AgentConfigFile{
			configName: {Body: body, ContentType: "text/yaml"},
		}},
		ConfigHash: sum[:],
	}
}

func (p *peer) wantsConfig(a *agent, capabilities uint64, ws bool) bool {
	if capabilities&acceptsRemoteConfig == 0 || string(a.hash) == string(p.config.ConfigHash) {
		return false
	}
	return !ws || string(a.sentHash) != string(p.config.ConfigHash)
}

func (p *peer) onMessage(ws bool) func(context.Context, types.Connection, *protobufs.AgentToServer) *protobufs.ServerToAgent {
	return func(_ context.Context, conn types.Connection, msg *protobufs.AgentToServer) *protobufs.ServerToAgent {
		resp := &protobufs.ServerToAgent{InstanceUid: msg.InstanceUid, Capabilities: serverCaps}
		uid := string(msg.InstanceUid)
		p.mu.Lock()
		defer p.mu.Unlock()
		if msg.AgentDisconnect != nil {
			delete(p.agents, uid)
			if ws {
				delete(p.byConn, conn)
			}
			return resp
		}
		a, known := p.agents[uid]
		if !known {
			a = &agent{}
			p.agents[uid] = a
		}
		gap := !known || msg.SequenceNum != a.seq+1
		a.seq = msg.SequenceNum
		if ws && a.conn != conn {
			a.conn = conn
			a.sentHash = nil
			p.byConn[conn] = uid
		}
		if msg.AgentDescription != nil {
			a.hasDesc = true
		}
		if s := msg.RemoteConfigStatus; s != nil {
			a.hash = s.LastRemoteConfigHash
			a.hasStatus = true
		}
		if gap && !(a.hasDesc && a.hasStatus) {
			resp.Flags |= reportFullState
			p.fullStates.Add(1)
			return resp
		}
		if p.wantsConfig(a, msg.Capabilities, ws) {
			resp.RemoteConfig = p.config
			a.sentHash = p.config.ConfigHash
			p.pushes.Add(1)
		}
		return resp
	}
}

func (p *peer) onClose(conn types.Connection) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if uid, ok := p.byConn[conn]; ok {
		delete(p.byConn, conn)
		if a, ok := p.agents[uid]; ok && a.conn == conn {
			a.conn = nil
		}
	}
}

func (p *peer) onConnecting(r *http.Request) types.ConnectionResponse {
	ws := r.Header.Get("Content-Type") != "application/x-protobuf"
	callbacks := types.ConnectionCallbacks{OnMessage: p.onMessage(ws)}
	if ws {
		callbacks.OnConnectionClose = p.onClose
	}
	return types.ConnectionResponse{Accept: true, ConnectionCallbacks: callbacks}
}

// push moves to the next generation and sends it to every WebSocket agent that lacks it.
func (p *peer) push(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	type target struct {
		conn types.Connection
		msg  *protobufs.ServerToAgent
	}
	p.mu.Lock()
	p.generation++
	p.config = makeConfig(p.generation, p.configBytes)
	var targets []target
	for uid, a := range p.agents {
		if a.conn == nil || string(a.hash) == string(p.config.ConfigHash) {
			continue
		}
		a.sentHash = p.config.ConfigHash
		targets = append(targets, target{a.conn, &protobufs.ServerToAgent{
			InstanceUid:  []byte(uid),
			Capabilities: serverCaps,
			RemoteConfig: p.config,
		}})
	}
	generation := p.generation
	p.mu.Unlock()
	go func() {
		for _, t := range targets {
			if err := t.conn.Send(context.Background(), t.msg); err == nil {
				p.pushes.Add(1)
			}
		}
	}()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"accepted": true, "generation": generation, "agents": len(targets)})
}

func (p *peer) stats(w http.ResponseWriter, _ *http.Request) {
	p.mu.Lock()
	body := map[string]any{
		"agents":              len(p.agents),
		"ws_connections":      len(p.byConn),
		"pushes":              p.pushes.Load(),
		"full_state_requests": p.fullStates.Load(),
		"generation":          p.generation,
		"config_hash":         hex.EncodeToString(p.config.ConfigHash),
	}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:4320", "loopback address to listen on (OpAMP, /push, /stats)")
	generation := flag.Int("generation", 0, "config generation served at start (a restart that changes nothing passes the last one)")
	configBytes := flag.Int("config-bytes", 4096, "approximate size of the config file")
	flag.Parse()

	host, _, err := net.SplitHostPort(*listen)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "peer: -listen %q must be a loopback address such as 127.0.0.1:4320\n", *listen)
		os.Exit(2)
	}

	p := &peer{
		agents:      map[string]*agent{},
		byConn:      map[types.Connection]string{},
		generation:  *generation,
		configBytes: *configBytes,
		config:      makeConfig(*generation, *configBytes),
	}
	srv := server.New(nil)
	handler, connContext, err := srv.Attach(server.Settings{
		Callbacks: types.Callbacks{OnConnecting: p.onConnecting},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "peer: %v\n", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(opampPath, handler)
	mux.HandleFunc("/push", p.push)
	mux.HandleFunc("/stats", p.stats)
	httpServer := &http.Server{Handler: mux, ConnContext: connContext, ReadHeaderTimeout: 10 * time.Second}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "peer: %v\n", err)
		os.Exit(1)
	}
	line, _ := json.Marshal(map[string]string{"event": "listening", "addr": ln.Addr().String()})
	fmt.Println(string(line))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		// Close, not Shutdown: the process then exits and drops every WebSocket (hijacked
		// connections are not the http.Server's to close), as a restarted server would.
		_ = httpServer.Close()
	}()
	if err := httpServer.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "peer: %v\n", err)
		os.Exit(1)
	}
}

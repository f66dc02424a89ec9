// Command opampgo-agent is a small OpAMP test agent built on opamp-go's client
// package. The opamp-gitops integration tests run it as a subprocess and read
// the JSON lines it prints on stdout. See ../README.md for the CLI and events.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/open-telemetry/opamp-go/client"
	"github.com/open-telemetry/opamp-go/client/types"
	"github.com/open-telemetry/opamp-go/protobufs"
	"google.golang.org/protobuf/proto"
)

const failMessage = "rejected by test agent"

// ---- command line ----

type kvList []string

func (l *kvList) String() string     { return strings.Join(*l, ",") }
func (l *kvList) Set(v string) error { *l = append(*l, v); return nil }

type options struct {
	endpoint          string
	attrs             kvList
	nonIdentifying    kvList
	uid               string
	headers           kvList
	stateDir          string
	pollInterval      time.Duration
	heartbeatInterval time.Duration
	fail              bool
	noAccept          bool
	acceptRestart     bool
	runFor            time.Duration
	applyDelay        time.Duration
	caFile            string
	tlsInsecure       bool
}

func parseFlags() (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("opampgo-agent", flag.ContinueOnError)
	fs.StringVar(&o.endpoint, "endpoint", "", "OpAMP server URL: ws(s):// selects WebSocket, http(s):// plain HTTP")
	fs.Var(&o.attrs, "attr", "identifying attribute k=v (repeatable)")
	fs.Var(&o.nonIdentifying, "non-identifying", "non-identifying attribute k=v (repeatable)")
	fs.StringVar(&o.uid, "uid", "", "instance uid (UUID); default: a new UUIDv7")
	fs.Var(&o.headers, "header", "extra request header \"Name: value\" (repeatable)")
	fs.StringVar(&o.stateDir, "state-dir", "", "directory for last-config.json (persisted applied config)")
	fs.DurationVar(&o.pollInterval, "poll-interval", time.Second, "HTTP transport poll/heartbeat interval")
	fs.DurationVar(&o.heartbeatInterval, "heartbeat-interval", 0, "WebSocket heartbeat interval (0: opamp-go default, 30s)")
	fs.BoolVar(&o.fail, "fail", false, "report FAILED instead of APPLIED")
	fs.BoolVar(&o.noAccept, "no-accept", false, "do not set AcceptsRemoteConfig/ReportsRemoteConfig")
	fs.BoolVar(&o.acceptRestart, "accept-restart", false, "also set AcceptsRestartCommand")
	fs.DurationVar(&o.runFor, "run-for", 10*time.Minute, "exit after this long")
	fs.DurationVar(&o.applyDelay, "apply-delay", 0, "report APPLYING and wait this long before APPLIED/FAILED (0: report APPLIED/FAILED at once)")
	fs.StringVar(&o.caFile, "ca-file", "", "PEM CA bundle to trust for wss:// / https://")
	fs.BoolVar(&o.tlsInsecure, "tls-insecure", false, "skip TLS certificate verification")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.endpoint == "" {
		return nil, errors.New("--endpoint is required")
	}
	if o.pollInterval <= 0 {
		return nil, errors.New("--poll-interval must be > 0")
	}
	return o, nil
}

func splitKV(s, sep string) (string, string, error) {
	k, v, ok := strings.Cut(s, sep)
	if !ok {
		return "", "", fmt.Errorf("%q: expected key%svalue", s, sep)
	}
	return strings.TrimSpace(k), strings.TrimSpace(v), nil
}

func keyValues(list kvList) ([]*protobufs.KeyValue, error) {
	var out []*protobufs.KeyValue
	for _, item := range list {
		k, v, err := splitKV(item, "=")
		if err != nil {
			return nil, err
		}
		out = append(out, &protobufs.KeyValue{
			Key:   k,
			Value: &protobufs.AnyValue{Value: &protobufs.AnyValue_StringValue{StringValue: v}},
		})
	}
	return out, nil
}

// ---- stdout events ----

type emitter struct {
	mu     sync.Mutex
	closed bool // set once "stopped" is out: nothing is printed after it
}

func (e *emitter) emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		log.Printf("cannot encode event: %v", err)
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	if ev, ok := v.(evSimple); ok && ev.Event == "stopped" {
		e.closed = true
	}
	// os.Stdout is unbuffered: one write per line, visible at once.
	_, _ = os.Stdout.Write(append(b, '\n'))
}

type evSimple struct {
	Event string `json:"event"`
}
type evStarted struct {
	Event string `json:"event"`
	UID   string `json:"uid"`
}
type evError struct {
	Event string `json:"event"`
	Error string `json:"error"`
}
type evErrorResponse struct {
	Event   string `json:"event"`
	Type    string `json:"type"`
	Message string `json:"message"`
}
type evHash struct {
	Event string `json:"event"`
	Hash  string `json:"hash"`
}
type evRemoteConfig struct {
	Event string            `json:"event"`
	Hash  string            `json:"hash"`
	Files map[string]string `json:"files"`
}
type evCommand struct {
	Event string `json:"event"`
	Type  string `json:"type"`
}

// ---- logger (stderr) ----

type stderrLogger struct {
	l *log.Logger
	// onError sees every error line; used to surface HTTP failures that
	// opamp-go reports only through its logger.
	onError func(msg string)
}

func (s *stderrLogger) Debugf(_ context.Context, format string, v ...any) {
	s.l.Printf("DEBUG "+format, v...)
}

func (s *stderrLogger) Errorf(_ context.Context, format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	s.l.Print("ERROR " + msg)
	if s.onError != nil {
		s.onError(msg)
	}
}

// ---- persisted state ----

type savedState struct {
	Hash         string            `json:"hash"`
	Files        map[string]string `json:"files"`
	ContentTypes map[string]string `json:"content_types,omitempty"`
}

func statePath(dir string) string { return filepath.Join(dir, "last-config.json") }

func loadState(dir string) (*savedState, error) {
	b, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s savedState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	return &s, nil
}

func saveState(dir string, s *savedState) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(dir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(dir))
}

// ---- agent ----

type agent struct {
	opts   *options
	out    *emitter
	logger *stderrLogger
	client client.OpAMPClient
	isHTTP bool
	uid    uuid.UUID

	mu        sync.Mutex
	effective map[string]*protobufs.AgentConfigFile
	connected bool

	failMu      sync.Mutex
	failPending bool
	failErr     string
	failStatus  string

	applyCh chan *protobufs.AgentRemoteConfig
}

func (a *agent) capabilities() protobufs.AgentCapabilities {
	c := protobufs.AgentCapabilities_AgentCapabilities_ReportsStatus |
		protobufs.AgentCapabilities_AgentCapabilities_ReportsEffectiveConfig |
		protobufs.AgentCapabilities_AgentCapabilities_ReportsHealth |
		protobufs.AgentCapabilities_AgentCapabilities_ReportsHeartbeat
	if !a.opts.noAccept {
		c |= protobufs.AgentCapabilities_AgentCapabilities_AcceptsRemoteConfig |
			protobufs.AgentCapabilities_AgentCapabilities_ReportsRemoteConfig
	}
	if a.opts.acceptRestart {
		c |= protobufs.AgentCapabilities_AgentCapabilities_AcceptsRestartCommand
	}
	return c
}

func (a *agent) setConnected(v bool) (changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	changed = a.connected != v
	a.connected = v
	return changed
}

func (a *agent) getEffectiveConfig(context.Context) (*protobufs.EffectiveConfig, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	m := make(map[string]*protobufs.AgentConfigFile, len(a.effective))
	for k, v := range a.effective {
		m[k] = proto.Clone(v).(*protobufs.AgentConfigFile)
	}
	return &protobufs.EffectiveConfig{ConfigMap: &protobufs.AgentConfigMap{ConfigMap: m}}, nil
}

func filesOf(cfg *protobufs.AgentRemoteConfig) (map[string]string, map[string]string) {
	files := map[string]string{}
	ctypes := map[string]string{}
	for name, f := range cfg.GetConfig().GetConfigMap() {
		files[name] = string(f.GetBody())
		if f.GetContentType() != "" {
			ctypes[name] = f.GetContentType()
		}
	}
	return files, ctypes
}

func (a *agent) onMessage(_ context.Context, msg *types.MessageData) {
	if msg.RemoteConfig == nil {
		return
	}
	files, _ := filesOf(msg.RemoteConfig)
	a.out.emit(evRemoteConfig{Event: "remote_config", Hash: hex.EncodeToString(msg.RemoteConfig.ConfigHash), Files: files})
	// Apply on a separate goroutine: with the HTTP transport this callback runs
	// on the sender's goroutine, so status updates made here would only leave
	// with the next poll.
	a.applyCh <- msg.RemoteConfig
}

func (a *agent) applyLoop() {
	for cfg := range a.applyCh {
		a.apply(cfg)
	}
}

func (a *agent) apply(cfg *protobufs.AgentRemoteConfig) {
	hash := cfg.ConfigHash
	if hash == nil {
		hash = []byte{}
	}
	hexHash := hex.EncodeToString(hash)
	ctx := context.Background()

	if a.opts.applyDelay > 0 {
		if err := a.client.SetRemoteConfigStatus(&protobufs.RemoteConfigStatus{
			LastRemoteConfigHash: hash,
			Status:               protobufs.RemoteConfigStatuses_RemoteConfigStatuses_APPLYING,
		}); err != nil {
			log.Printf("ERROR SetRemoteConfigStatus(APPLYING): %v", err)
		}
		a.out.emit(evHash{Event: "applying", Hash: hexHash})
		time.Sleep(a.opts.applyDelay)
	}

	if a.opts.fail {
		if err := a.client.SetRemoteConfigStatus(&protobufs.RemoteConfigStatus{
			LastRemoteConfigHash: hash,
			Status:               protobufs.RemoteConfigStatuses_RemoteConfigStatuses_FAILED,
			ErrorMessage:         failMessage,
		}); err != nil {
			log.Printf("ERROR SetRemoteConfigStatus(FAILED): %v", err)
		}
		a.out.emit(evHash{Event: "failed", Hash: hexHash})
		return
	}

	newEffective := map[string]*protobufs.AgentConfigFile{}
	for name, f := range cfg.GetConfig().GetConfigMap() {
		newEffective[name] = proto.Clone(f).(*protobufs.AgentConfigFile)
	}
	a.mu.Lock()
	a.effective = newEffective
	a.mu.Unlock()

	if a.opts.stateDir != "" {
		files, ctypes := filesOf(cfg)
		if err := saveState(a.opts.stateDir, &savedState{Hash: hexHash, Files: files, ContentTypes: ctypes}); err != nil {
			log.Printf("ERROR cannot persist state: %v", err)
		}
	}

	if err := a.client.SetRemoteConfigStatus(&protobufs.RemoteConfigStatus{
		LastRemoteConfigHash: hash,
		Status:               protobufs.RemoteConfigStatuses_RemoteConfigStatuses_APPLIED,
	}); err != nil {
		log.Printf("ERROR SetRemoteConfigStatus(APPLIED): %v", err)
	}
	if err := a.client.UpdateEffectiveConfig(ctx); err != nil {
		log.Printf("ERROR UpdateEffectiveConfig: %v", err)
	}
	a.out.emit(evHash{Event: "applied", Hash: hexHash})
}

func (a *agent) onCommand(_ context.Context, cmd *protobufs.ServerToAgentCommand) error {
	t := strings.TrimPrefix(cmd.GetType().String(), "CommandType_")
	a.out.emit(evCommand{Event: "command", Type: t})
	return nil
}

func (a *agent) onError(_ context.Context, er *protobufs.ServerErrorResponse) {
	t := strings.TrimPrefix(er.GetType().String(), "ServerErrorResponseType_")
	a.out.emit(evErrorResponse{Event: "error_response", Type: t, Message: er.GetErrorMessage()})
}

func (a *agent) onConnect(context.Context) {
	changed := a.setConnected(true)
	// The HTTP client calls OnConnect after every successful poll; report
	// only transitions there. Each WebSocket OnConnect is a new connection.
	if !a.isHTTP || changed {
		a.out.emit(evSimple{Event: "connected"})
	}
}

// onConnectFailed reports a failed connection attempt. opamp-go v0.23.0's
// WebSocket client calls OnConnectFailed twice for one failed dial (and logs
// the HTTP status of a refused upgrade in between), so a failure is emitted
// after a short delay, once, with the status appended when one was logged.
func (a *agent) onConnectFailed(_ context.Context, err error) {
	a.setConnected(false)
	msg := errString(err)
	if a.isHTTP {
		a.out.emit(evError{Event: "connect_failed", Error: msg})
		return
	}
	a.failMu.Lock()
	defer a.failMu.Unlock()
	if a.failPending && a.failErr == msg {
		return // the duplicate call for the same attempt
	}
	a.failPending, a.failErr, a.failStatus = true, msg, ""
	time.AfterFunc(50*time.Millisecond, func() {
		a.failMu.Lock()
		text := a.failErr
		if a.failStatus != "" {
			text += " (status=" + a.failStatus + ")"
		}
		a.failPending = false
		a.failMu.Unlock()
		a.out.emit(evError{Event: "connect_failed", Error: text})
	})
}

// noteWSStatus records the status opamp-go logs for a refused WebSocket upgrade.
func (a *agent) noteWSStatus(logMsg string) {
	const prefix = "Server responded with status="
	if !strings.HasPrefix(logMsg, prefix) {
		return
	}
	a.failMu.Lock()
	if a.failPending {
		a.failStatus = strings.TrimPrefix(logMsg, prefix)
	}
	a.failMu.Unlock()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// sendHTTPDisconnect posts a final AgentToServer{agent_disconnect}: opamp-go's
// HTTP client (v0.23.0) does not send one on Stop.
func (a *agent) sendHTTPDisconnect(header http.Header, tlsCfg *tls.Config) {
	msg := &protobufs.AgentToServer{
		InstanceUid:     a.uid[:],
		Capabilities:    uint64(a.capabilities()),
		AgentDisconnect: &protobufs.AgentDisconnect{},
	}
	body, err := proto.Marshal(msg)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.opts.endpoint, bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header = header.Clone()
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("OpAMP-Instance-UID", a.uid.String())
	hc := &http.Client{}
	if tlsCfg != nil {
		hc.Transport = &http.Transport{TLSClientConfig: tlsCfg}
	}
	resp, err := hc.Do(req)
	if err != nil {
		log.Printf("DEBUG agent_disconnect not delivered: %v", err)
		return
	}
	_ = resp.Body.Close()
}

func run() int {
	log.SetOutput(os.Stderr)
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	opts, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "opampgo-agent:", err)
		return 2
	}
	out := &emitter{}

	u, err := url.Parse(opts.endpoint)
	if err != nil {
		fmt.Fprintln(os.Stderr, "opampgo-agent: bad --endpoint:", err)
		return 2
	}
	a := &agent{opts: opts, out: out, applyCh: make(chan *protobufs.AgentRemoteConfig, 16), effective: map[string]*protobufs.AgentConfigFile{}}
	a.logger = &stderrLogger{l: log.New(os.Stderr, "opamp ", log.LstdFlags|log.Lmicroseconds)}

	switch strings.ToLower(u.Scheme) {
	case "ws", "wss":
		a.client = client.NewWebSocket(a.logger)
		a.logger.onError = a.noteWSStatus
	case "http", "https":
		a.isHTTP = true
		a.client = client.NewHTTP(a.logger)
		// opamp-go's HTTP sender reports a non-200 answer other than 429/503
		// (e.g. 401) only through its logger, and then drops that message.
		a.logger.onError = func(msg string) {
			if strings.HasPrefix(msg, "invalid response from server") {
				a.setConnected(false)
				out.emit(evError{Event: "connect_failed", Error: msg})
			}
		}
	default:
		fmt.Fprintf(os.Stderr, "opampgo-agent: --endpoint scheme must be ws, wss, http or https, not %q\n", u.Scheme)
		return 2
	}

	if opts.uid != "" {
		a.uid, err = uuid.Parse(opts.uid)
		if err != nil {
			fmt.Fprintln(os.Stderr, "opampgo-agent: bad --uid:", err)
			return 2
		}
	} else {
		a.uid, err = uuid.NewV7()
		if err != nil {
			fmt.Fprintln(os.Stderr, "opampgo-agent:", err)
			return 1
		}
	}

	header := http.Header{}
	for _, h := range opts.headers {
		k, v, err := splitKV(h, ":")
		if err != nil {
			fmt.Fprintln(os.Stderr, "opampgo-agent: bad --header:", err)
			return 2
		}
		header.Add(k, v)
	}

	var tlsCfg *tls.Config
	if opts.caFile != "" || opts.tlsInsecure {
		tlsCfg = &tls.Config{InsecureSkipVerify: opts.tlsInsecure} //nolint:gosec // test agent
		if opts.caFile != "" {
			pem, err := os.ReadFile(opts.caFile)
			if err != nil {
				fmt.Fprintln(os.Stderr, "opampgo-agent: --ca-file:", err)
				return 2
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				fmt.Fprintln(os.Stderr, "opampgo-agent: --ca-file: no certificates found")
				return 2
			}
			tlsCfg.RootCAs = pool
		}
	}

	ident, err := keyValues(opts.attrs)
	if err != nil {
		fmt.Fprintln(os.Stderr, "opampgo-agent: bad --attr:", err)
		return 2
	}
	nonIdent, err := keyValues(opts.nonIdentifying)
	if err != nil {
		fmt.Fprintln(os.Stderr, "opampgo-agent: bad --non-identifying:", err)
		return 2
	}
	if len(ident) == 0 && len(nonIdent) == 0 {
		// opamp-go refuses an agent description without attributes.
		ident, _ = keyValues(kvList{"service.name=opampgo-agent"})
	}
	sort.SliceStable(ident, func(i, j int) bool { return ident[i].Key < ident[j].Key })
	sort.SliceStable(nonIdent, func(i, j int) bool { return nonIdent[i].Key < nonIdent[j].Key })
	if err := a.client.SetAgentDescription(&protobufs.AgentDescription{
		IdentifyingAttributes:    ident,
		NonIdentifyingAttributes: nonIdent,
	}); err != nil {
		fmt.Fprintln(os.Stderr, "opampgo-agent: SetAgentDescription:", err)
		return 1
	}
	if err := a.client.SetHealth(&protobufs.ComponentHealth{
		Healthy:           true,
		StartTimeUnixNano: uint64(time.Now().UnixNano()),
		Status:            "running",
	}); err != nil {
		fmt.Fprintln(os.Stderr, "opampgo-agent: SetHealth:", err)
		return 1
	}
	caps := a.capabilities()
	if err := a.client.SetCapabilities(&caps); err != nil {
		fmt.Fprintln(os.Stderr, "opampgo-agent: SetCapabilities:", err)
		return 1
	}

	settings := types.StartSettings{
		OpAMPServerURL: opts.endpoint,
		Header:         header,
		TLSConfig:      tlsCfg,
		InstanceUid:    types.InstanceUid(a.uid),
		Callbacks: types.Callbacks{
			OnConnect:          a.onConnect,
			OnConnectFailed:    a.onConnectFailed,
			OnError:            a.onError,
			OnMessage:          a.onMessage,
			OnCommand:          a.onCommand,
			GetEffectiveConfig: a.getEffectiveConfig,
		},
	}
	if a.isHTTP {
		// For the HTTP client the heartbeat interval is the polling interval.
		d := opts.pollInterval
		settings.HeartbeatInterval = &d
	} else if opts.heartbeatInterval > 0 {
		d := opts.heartbeatInterval
		settings.HeartbeatInterval = &d
	}

	var restored *savedState
	if opts.stateDir != "" {
		restored, err = loadState(opts.stateDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "opampgo-agent: --state-dir:", err)
			return 1
		}
		if restored != nil {
			hash, err := hex.DecodeString(restored.Hash)
			if err != nil {
				fmt.Fprintln(os.Stderr, "opampgo-agent: bad hash in state:", err)
				return 1
			}
			settings.RemoteConfigStatus = &protobufs.RemoteConfigStatus{
				LastRemoteConfigHash: hash,
				Status:               protobufs.RemoteConfigStatuses_RemoteConfigStatuses_APPLIED,
			}
			for name, body := range restored.Files {
				a.effective[name] = &protobufs.AgentConfigFile{Body: []byte(body), ContentType: restored.ContentTypes[name]}
			}
		}
	}

	go a.applyLoop()

	out.emit(evStarted{Event: "started", UID: a.uid.String()})
	if restored != nil {
		out.emit(evHash{Event: "restored", Hash: restored.Hash})
	}

	if err := a.client.Start(context.Background(), settings); err != nil {
		out.emit(evError{Event: "connect_failed", Error: err.Error()})
		fmt.Fprintln(os.Stderr, "opampgo-agent: Start:", err)
		return 1
	}

	sigCh := make(chan os.Signal, 1)
	signal.Notify(sigCh, syscall.SIGTERM, syscall.SIGINT)
	select {
	case s := <-sigCh:
		log.Printf("received %v, stopping", s)
	case <-time.After(opts.runFor):
		log.Printf("--run-for %v elapsed, stopping", opts.runFor)
	}

	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.client.Stop(stopCtx); err != nil {
		log.Printf("ERROR Stop: %v", err)
	}
	if a.isHTTP {
		a.sendHTTPDisconnect(header, tlsCfg)
	}
	out.emit(evSimple{Event: "stopped"})
	return 0
}

func main() { os.Exit(run()) }

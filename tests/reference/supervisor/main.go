// Command opampsupervisor builds the OpenTelemetry OpAMP Supervisor from the
// importable packages of the contrib module cmd/opampsupervisor (that module
// itself cannot be `go install`ed: its go.mod has replace directives).
//
// Usage: opampsupervisor --config supervisor.yaml
// Stops on SIGINT or SIGTERM (shutting down the Collector it runs).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/open-telemetry/opentelemetry-collector-contrib/cmd/opampsupervisor/supervisor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/cmd/opampsupervisor/supervisor/config"
	"github.com/open-telemetry/opentelemetry-collector-contrib/cmd/opampsupervisor/supervisor/telemetry"
)

func main() {
	configPath := flag.String("config", "", "path to the supervisor configuration file")
	flag.Parse()
	if err := run(*configPath); err != nil {
		fmt.Fprintln(os.Stderr, "opampsupervisor:", err)
		os.Exit(1)
	}
}

func run(configPath string) error {
	cfg, err := config.Load(configPath)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	logger, err := telemetry.NewLogger(cfg.Telemetry.Logs)
	if err != nil {
		return fmt.Errorf("create logger: %w", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	s, err := supervisor.NewSupervisor(ctx, logger.Named("supervisor"), cfg)
	if err != nil {
		return fmt.Errorf("create supervisor: %w", err)
	}
	if err := s.Start(ctx); err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	s.Shutdown()
	return nil
}

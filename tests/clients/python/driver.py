#!/usr/bin/env python3
"""Test driver: a minimal OpAMP agent built on PyPI ``opentelemetry-opamp-client`` (plain HTTP).

Used by the opamp-gitops integration tests to prove the server works with a real third-party
client. Only the library's public API is used (OpAMPClient / OpAMPAgent / OpAMPCallbacks), with
one exception: the instance uid is read from ``OpAMPClient._instance_uid`` because 0.5b0 has no
public accessor for it (read-only; nothing in the library is patched).

Usage:
    driver.py --endpoint http://127.0.0.1:PORT/v1/opamp --attr key=value [--attr ...]
              [--header "Name: value" ...] [--poll-interval 1s] [--run-for 60s]

stdout: JSON lines, one per event, flushed:
    {"event":"started","uid":"<uuid>"}
    {"event":"remote_config","hash":"<hex>","files":{"<name>":"<body>"}}
    {"event":"applied","hash":"<hex>"}      after APPLIED (+ effective config) reached the server
    {"event":"error","message":"..."}
    {"event":"stopped"}                      after SIGTERM/SIGINT/--run-for (AgentDisconnect sent)
stderr: the library's logs (level from $DRIVER_LOG_LEVEL, default INFO).
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid

from opentelemetry._opamp import OpAMPAgent, OpAMPCallbacks, OpAMPClient
from opentelemetry._opamp.proto import opamp_pb2

_out_lock = threading.Lock()

# The library has no minimum poll interval (0 would busy-loop); both drivers use the Node
# library's minimum, 100 ms.
MIN_POLL_INTERVAL = 0.1
REQUEST_TIMEOUT_MS = 5_000


def emit(event: str, **fields) -> None:
    line = json.dumps({"event": event, **fields}, separators=(",", ":"))
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def parse_duration(text: str) -> float:
    """'1s', '500ms', '2m', '1.5s', '1h' or a bare number of seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration: {text!r}")
    value = float(m.group(1))
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m.group(2)]


def parse_attr(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--attr wants key=value, got {text!r}")
    return key, value


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--header wants 'Name: value', got {text!r}")
    return name.strip(), value.strip()


class DriverCallbacks(OpAMPCallbacks):
    def __init__(self) -> None:
        # Effective config = the last remote config map applied (name -> body bytes).
        self.effective: dict[str, bytes] = {}
        # All callbacks run on the agent's single worker thread; the last connect outcome
        # seen before a job's completion callback is that job's outcome.
        self._last_send_ok = False
        self._last_send_error = ""

    # -- library callbacks --------------------------------------------------------------------
    def on_connect(self, agent, client) -> None:
        self._last_send_ok = True

    def on_connect_failed(self, agent, client, error) -> None:
        self._last_send_ok = False
        self._last_send_error = str(error)
        emit("error", message=f"send failed: {error}")

    def on_error(self, agent, client, error_response) -> None:
        type_name = opamp_pb2.ServerErrorResponseType.Name(error_response.type)
        emit("error", message=f"server error_response {type_name}: {error_response.error_message}")

    def on_message(self, agent, client, message) -> None:
        rc = message.remote_config
        if rc is None:
            return
        hash_hex = rc.config_hash.hex()
        config_map = rc.config.config_map
        files = {name: f.body.decode("utf-8", errors="replace") for name, f in config_map.items()}
        emit("remote_config", hash=hash_hex, files=files)

        # "Apply": the received map becomes the effective config. The library's own
        # decode_remote_config() only understands JSON bodies, so the raw map is used.
        content_types = {f.content_type for f in config_map.values()}
        content_type = content_types.pop() if len(content_types) == 1 else ""
        if content_type == "application/json":
            # build_effective_config_message() json.dumps() the values for this content type.
            effective = {name: json.loads(f.body) for name, f in config_map.items()}
        else:
            effective = {name: bytes(f.body) for name, f in config_map.items()}
        self.effective = {name: bytes(f.body) for name, f in config_map.items()}

        client.update_effective_config(effective, content_type)
        status = client.update_remote_config_status(
            remote_config_hash=rc.config_hash,
            status=opamp_pb2.RemoteConfigStatuses.RemoteConfigStatuses_APPLIED,
        )
        if status is None:
            # Same hash and status as already reported: the library has nothing new to send.
            print(f"driver: remote config {hash_hex} already reported APPLIED", file=sys.stderr)
            return
        # A full-state message carries remote_config_status AND effective_config (the library's
        # status-only message has no effective config).
        payload = client.build_full_state_message()

        def reported() -> None:
            if self._last_send_ok:
                emit("applied", hash=hash_hex)
            else:
                emit("error", message=f"APPLIED report for {hash_hex} dropped: {self._last_send_error}")

        agent.send(payload, callback=reported)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--attr", action="append", type=parse_attr, default=[])
    p.add_argument("--header", action="append", type=parse_header, default=[])
    p.add_argument("--poll-interval", type=parse_duration, default=parse_duration("1s"))
    p.add_argument("--run-for", type=parse_duration, default=None, help="stop after this long (default: until signalled)")
    args = p.parse_args()

    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("DRIVER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    capabilities = (
        opamp_pb2.AgentCapabilities.AgentCapabilities_ReportsStatus
        | opamp_pb2.AgentCapabilities.AgentCapabilities_AcceptsRemoteConfig
        | opamp_pb2.AgentCapabilities.AgentCapabilities_ReportsRemoteConfig
        | opamp_pb2.AgentCapabilities.AgentCapabilities_ReportsEffectiveConfig
        # The library's polling loop is what it calls heartbeats; it declares this by default.
        | opamp_pb2.AgentCapabilities.AgentCapabilities_ReportsHeartbeat
    )
    if args.poll_interval < MIN_POLL_INTERVAL:
        print(f"driver: --poll-interval raised to {MIN_POLL_INTERVAL}s", file=sys.stderr)
        args.poll_interval = MIN_POLL_INTERVAL

    client = OpAMPClient(
        endpoint=args.endpoint,
        headers=dict(args.header),
        # The library's default is 1 s per request; a debug server on a busy 2-core machine can
        # take longer. (The Node library waits 10 s.)
        timeout_millis=REQUEST_TIMEOUT_MS,
        agent_identifying_attributes=dict(args.attr),
        capabilities=capabilities,
    )
    callbacks = DriverCallbacks()
    agent = OpAMPAgent(interval=args.poll_interval, callbacks=callbacks, client=client)

    stop = threading.Event()

    def on_signal(signum, _frame) -> None:
        print(f"driver: got signal {signum}, stopping", file=sys.stderr)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    agent.start()
    # start() registers agent.stop with atexit; we stop explicitly below, and a second stop()
    # would send a second AgentDisconnect.
    atexit.unregister(agent.stop)
    emit("started", uid=str(uuid.UUID(bytes=client._instance_uid)))

    # Short waits keep the main thread responsive to signals.
    deadline = None if args.run_for is None else time.monotonic() + args.run_for
    while not stop.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            break
    agent.stop(timeout=5)  # sends AgentDisconnect (synchronously), then joins the threads
    emit("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env node
/*
 * Test driver: a minimal OpAMP agent built on npm `@elastic/opamp-client-node` (plain HTTP).
 *
 * Used by the opamp-gitops integration tests to prove the server works with a real third-party
 * client. Only the library's public API is used: createOpAMPClient, setAgentDescription,
 * start, getInstanceUid, setRemoteConfigStatus, shutdown, the `onMessage` option and the
 * exported diagnostics channels (`diagEnabled: true`) to learn when a send succeeded/failed.
 *
 * Usage:
 *   node driver.js --endpoint http://127.0.0.1:PORT/v1/opamp --attr key=value [--attr ...]
 *                  [--header "Name: value" ...] [--poll-interval 1s] [--run-for 60s]
 *
 * stdout: JSON lines, one per event:
 *   {"event":"started","uid":"<uuid>"}
 *   {"event":"remote_config","hash":"<hex>","files":{"<name>":"<body>"}}
 *   {"event":"applied","hash":"<hex>"}      after the APPLIED status reached the server
 *   {"event":"error","message":"..."}
 *   {"event":"stopped"}                      after SIGTERM/SIGINT/--run-for
 * stderr: the library's logs (level from $DRIVER_LOG_LEVEL, default info).
 *
 * Library limits (0.5.0): it refuses the ReportsEffectiveConfig capability and has no API to
 * report an effective config, and shutdown() sends no AgentDisconnect. See ../README.md.
 */
'use strict';

const diagnostics = require('node:diagnostics_channel');
const {
    createOpAMPClient,
    AgentCapabilities,
    RemoteConfigStatuses,
    DIAG_CH_SEND_SUCCESS,
    DIAG_CH_SEND_FAIL,
} = require('@elastic/opamp-client-node');

function emit(event, fields = {}) {
    // Writes to pipes and files are synchronous in Node on Linux: nothing is left buffered.
    process.stdout.write(JSON.stringify({event, ...fields}) + '\n');
}

function usage(msg) {
    process.stderr.write(
        `driver.js: ${msg}\n` +
            'usage: driver.js --endpoint URL --attr key=value [--attr ...] ' +
            '[--header "Name: value" ...] [--poll-interval 1s] [--run-for 60s]\n'
    );
    process.exit(2);
}

/** '1s', '500ms', '2m', '1.5s', '1h' or a bare number of seconds -> seconds. */
function parseDuration(text) {
    const m = /^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*$/.exec(text ?? '');
    if (!m) usage(`invalid duration: ${JSON.stringify(text)}`);
    const unit = {ms: 0.001, s: 1, m: 60, h: 3600}[m[2] ?? 's'];
    return Number(m[1]) * unit;
}

function parseArgs(argv) {
    const args = {attrs: {}, headers: {}, pollInterval: 1, runFor: null};
    for (let i = 0; i < argv.length; i++) {
        let name = argv[i];
        let value;
        const eq = name.indexOf('=');
        if (name.startsWith('--') && eq > 0) {
            value = name.slice(eq + 1);
            name = name.slice(0, eq);
        } else {
            value = argv[++i];
        }
        if (value === undefined) usage(`${name} needs a value`);
        switch (name) {
            case '--endpoint':
                args.endpoint = value;
                break;
            case '--attr': {
                const k = value.indexOf('=');
                if (k <= 0) usage(`--attr wants key=value, got ${JSON.stringify(value)}`);
                args.attrs[value.slice(0, k)] = value.slice(k + 1);
                break;
            }
            case '--header': {
                const k = value.indexOf(':');
                if (k <= 0 || !value.slice(0, k).trim()) {
                    usage(`--header wants 'Name: value', got ${JSON.stringify(value)}`);
                }
                args.headers[value.slice(0, k).trim()] = value.slice(k + 1).trim();
                break;
            }
            case '--poll-interval':
                args.pollInterval = parseDuration(value);
                break;
            case '--run-for':
                args.runFor = parseDuration(value);
                break;
            default:
                usage(`unknown argument ${JSON.stringify(name)}`);
        }
    }
    if (!args.endpoint) usage('--endpoint is required');
    return args;
}

function hex(bytes) {
    return Buffer.from(bytes ?? []).toString('hex');
}

function uuidString(bytes) {
    const h = hex(bytes);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function errMessage(err) {
    if (err instanceof Error) return `${err.name}: ${err.message}`;
    return String(err);
}

/** A pino-like logger writing one line per record to stderr. */
function stderrLogger(levelName) {
    const levels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
    const min = Math.max(0, levels.indexOf(levelName));
    const log = {};
    levels.forEach((lvl, i) => {
        log[lvl] = (...a) => {
            if (i < min) return;
            let fields = {};
            let msg = '';
            if (a[0] instanceof Error) {
                fields = {err: errMessage(a[0])};
                msg = a.slice(1).join(' ');
            } else if (a[0] !== null && typeof a[0] === 'object') {
                fields = a[0];
                msg = a.slice(1).join(' ');
            } else {
                msg = a.join(' ');
            }
            let extra;
            try {
                extra = JSON.stringify(fields, (k, v) => {
                    if (typeof v === 'bigint') return v.toString();
                    if (v instanceof Error) return errMessage(v);
                    if (v instanceof Uint8Array) return hex(v);
                    return v;
                });
            } catch {
                extra = '{}';
            }
            process.stderr.write(`${new Date().toISOString()} ${lvl.toUpperCase()} opamp-client: ${msg} ${extra}\n`);
        };
    });
    return log;
}

function main() {
    const args = parseArgs(process.argv.slice(2));
    const log = stderrLogger((process.env.DRIVER_LOG_LEVEL || 'info').toLowerCase());
    // The library's minimum is 100 ms; below it, it silently falls back to its 30 s default.
    if (args.pollInterval < 0.1) {
        process.stderr.write('driver: --poll-interval raised to 0.1s (the library minimum)\n');
        args.pollInterval = 0.1;
    }

    // The library accepts only ReportsStatus, ReportsHeartbeat (both always on),
    // AcceptsRemoteConfig and ReportsRemoteConfig: passing ReportsEffectiveConfig throws.
    const capabilities = BigInt(
        AgentCapabilities.AgentCapabilities_ReportsStatus |
            AgentCapabilities.AgentCapabilities_AcceptsRemoteConfig |
            AgentCapabilities.AgentCapabilities_ReportsRemoteConfig
    );

    let effectiveConfig = {}; // name -> body text: what this "agent" runs.
    let pendingApplied = new Map(); // hash hex -> true while the APPLIED report is unsent

    const client = createOpAMPClient({
        endpoint: args.endpoint,
        headers: args.headers,
        capabilities,
        heartbeatIntervalSeconds: args.pollInterval,
        log,
        diagEnabled: true,
        onMessage: ({remoteConfig}) => {
            if (!remoteConfig) return;
            const hashHex = hex(remoteConfig.configHash);
            const files = {};
            const configMap = remoteConfig.config?.configMap ?? {};
            for (const [name, file] of Object.entries(configMap)) {
                files[name] = Buffer.from(file.body ?? []).toString('utf8');
            }
            emit('remote_config', {hash: hashHex, files});
            // "Apply": the received map becomes the effective config.
            effectiveConfig = files;
            pendingApplied.set(hashHex, true);
            // Only sends (and so only leads to an `applied` event) when the status changed.
            client.setRemoteConfigStatus({
                lastRemoteConfigHash: remoteConfig.configHash,
                status: RemoteConfigStatuses.RemoteConfigStatuses_APPLIED,
            });
        },
    });

    diagnostics.subscribe(DIAG_CH_SEND_SUCCESS, (msg) => {
        const st = msg.a2s?.remoteConfigStatus;
        if (st && st.status === RemoteConfigStatuses.RemoteConfigStatuses_APPLIED) {
            const h = hex(st.lastRemoteConfigHash);
            if (pendingApplied.delete(h)) emit('applied', {hash: h});
        }
    });
    diagnostics.subscribe(DIAG_CH_SEND_FAIL, (msg) => {
        const retry = msg.retryAfterMs ? ` (retry after ${msg.retryAfterMs}ms)` : '';
        emit('error', {message: `send failed: ${errMessage(msg.err)}${retry}`});
    });

    client.setAgentDescription({identifyingAttributes: args.attrs});
    client.start();
    emit('started', {uid: uuidString(client.getInstanceUid())});

    // The library unref()s its timers; this keeps the process alive until told to stop.
    const keepAlive = setInterval(() => {}, 1 << 30);
    let stopping = false;
    async function stop(why) {
        if (stopping) return;
        stopping = true;
        process.stderr.write(`driver: stopping (${why})\n`);
        clearInterval(keepAlive);
        try {
            await Promise.race([
                client.shutdown(),
                new Promise((resolve) => setTimeout(resolve, 5000)),
            ]);
        } catch (err) {
            emit('error', {message: `shutdown: ${errMessage(err)}`});
        }
        emit('stopped');
        process.exit(0);
    }
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    if (args.runFor !== null) setTimeout(() => stop('run-for elapsed'), args.runFor * 1000);
}

main();

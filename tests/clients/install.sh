#!/usr/bin/env bash
# Installs the third-party OpAMP clients that the integration tests drive, unmodified, from
# their package registries:
#   - PyPI opentelemetry-opamp-client (pins: python/requirements.txt) into a venv at
#     ${OPAMP_GITOPS_CLIENTS_CACHE:-$HOME/.cache/opamp-gitops/clients}/venv
#   - npm @elastic/opamp-client-node (pins: node/package-lock.json) into node/node_modules
#     (`npm ci`; git-ignored)
#
# Idempotent: each half records a stamp (hash of its pin file + interpreter version) and is
# skipped when the stamp matches, so a second run does nothing slow.
#
# The LAST line on stdout is the venv's python path. Everything else goes to stderr.
# The node driver runs as: node tests/clients/node/driver.js
#
# Environment: OPAMP_GITOPS_CLIENTS_CACHE (cache dir), PYTHON (interpreter for the venv,
# default python3; must be >= 3.10), NPM (default npm).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${OPAMP_GITOPS_CLIENTS_CACHE:-$HOME/.cache/opamp-gitops/clients}"
venv="$cache/venv"
python="${PYTHON:-python3}"
npm="${NPM:-npm}"

log() { echo "install.sh: $*" >&2; }

sha() { sha256sum "$@" | awk '{print $1}' | tr '\n' ' '; }

# ---- Python ----------------------------------------------------------------------------------
req="$here/python/requirements.txt"
py_ver="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
py_want="req=$(sha "$req") python=$py_ver"
py_stamp="$venv/.opamp-gitops-stamp"

if [[ -x "$venv/bin/python" && -f "$py_stamp" && "$(cat "$py_stamp")" == "$py_want" ]] \
    && "$venv/bin/python" -c 'import opentelemetry._opamp' 2>/dev/null; then
    log "python venv up to date ($venv)"
else
    log "creating python venv at $venv (python $py_ver)"
    mkdir -p "$cache"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # --no-deps: requirements.txt lists the whole closure with exact versions.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --no-deps -r "$req" >&2
    "$venv/bin/python" -m pip check >&2
    "$venv/bin/python" -c 'import opentelemetry._opamp' >&2
    printf '%s' "$py_want" > "$py_stamp"
fi

# ---- Node ------------------------------------------------------------------------------------
lock="$here/node/package-lock.json"
node_ver="$(node --version)"
node_want="lock=$(sha "$lock" "$here/node/package.json") node=$node_ver"
node_stamp="$here/node/node_modules/.opamp-gitops-stamp"

if [[ -f "$node_stamp" && "$(cat "$node_stamp")" == "$node_want" \
    && -f "$here/node/node_modules/@elastic/opamp-client-node/package.json" ]]; then
    log "node_modules up to date ($here/node/node_modules)"
else
    log "npm ci in $here/node"
    (cd "$here/node" && "$npm" ci --no-audit --no-fund --loglevel=error >&2)
    printf '%s' "$node_want" > "$node_stamp"
fi

echo "$venv/bin/python"

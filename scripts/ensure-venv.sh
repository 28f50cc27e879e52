#!/usr/bin/env bash
# Make sure .venv exists (Python >= 3.11) with LinkFlow installed editable plus its dev extras.
# Re-installs only when pyproject.toml is newer than .venv/.installed-stamp. Prints one line.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP=$VENV/.installed-stamp
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

py_ok() { "$1" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }

did=''
# A venv whose interpreter no longer runs (moved, or its base Python removed) is rebuilt.
if [ -d "$VENV" ] && ! py_ok "$VENV/bin/python"; then
    rm -rf "$VENV"
    did='removed a broken .venv; '
fi

if [ ! -x "$VENV/bin/python" ]; then
    PY=''
    for cand in python3.13 python3.12 python3.11 python3; do
        # pyenv shims exist for versions that are not selected: run each to be sure.
        if command -v "$cand" >/dev/null 2>&1 && py_ok "$cand"; then
            PY=$cand
            break
        fi
    done
    if [ -z "$PY" ]; then
        echo "ensure-venv: no Python >= 3.11 found (tried python3.13, python3.12, python3.11, python3)" >&2
        exit 1
    fi
    "$PY" -m venv "$VENV"
    did+="created .venv with $("$VENV/bin/python" -c 'import platform; print("Python", platform.python_version())'); "
fi

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip &&
        "$VENV/bin/python" -m pip install -q -e '.[dev]'; } </dev/null >"$log" 2>&1; then
        cat "$log" >&2
        echo "ensure-venv: pip install -e '.[dev]' failed" >&2
        exit 1
    fi
    touch "$STAMP"
    did+="installed -e '.[dev]'"
    echo "venv: ${did}"
else
    echo "venv: ${did}up to date ($("$VENV/bin/python" --version 2>&1); pyproject.toml unchanged since the last install)"
fi

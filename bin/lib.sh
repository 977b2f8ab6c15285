# Shared by bin/start and bin/test (sourced, not run): a virtualenv with the project installed in it.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ACCRUAL_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# Creates the venv if missing and installs `.[dev]`; reinstalls only when pyproject.toml changed,
# so a second start takes seconds.
ensure_venv() {
    if [ ! -x "$PY" ]; then
        local python="${PYTHON:-python3.11}"
        if ! command -v "$python" >/dev/null 2>&1; then
            echo "Accrual needs Python 3.11: install it or set PYTHON=/path/to/python3.11" >&2
            exit 1
        fi
        say "Creating the virtualenv in $VENV"
        "$python" -m venv "$VENV"
    fi
    local stamp="$VENV/.accrual-installed" want
    want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $ROOT"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        say "Installing Accrual and its dependencies (pip install -e '.[dev]')"
        "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
        "$PY" -m pip install --quiet --disable-pip-version-check -e "$ROOT[dev]"
        echo "$want" >"$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}

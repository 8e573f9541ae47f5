#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries (initdb, pg_ctl) are installed, for the test suite's
# private cluster (tests/pgcluster.py). Installs Debian's `postgresql` package if they are
# missing; does nothing otherwise. Prints one line saying what it did.
set -euo pipefail

find_initdb() {
    # Debian layout; print the highest version's initdb (as tests/pgcluster.py picks it).
    local candidate
    local -a found=()
    shopt -s nullglob
    for candidate in /usr/lib/postgresql/*/bin/initdb; do
        [[ -x "$candidate" ]] && found+=("$candidate")
    done
    shopt -u nullglob
    ((${#found[@]} > 0)) || return 1
    printf '%s\n' "${found[@]}" | sort -V | tail -n 1
}

if initdb_path="$(find_initdb)"; then
    echo "ensure-postgres: PostgreSQL server already installed ($initdb_path)"
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "ensure-postgres: PostgreSQL server not found under /usr/lib/postgresql/*/bin;" \
        "install it with: sudo apt-get install -y postgresql (then re-run make test)" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-postgres: PostgreSQL server not found and apt-get is unavailable;" \
        "install PostgreSQL (initdb, pg_ctl) with your package manager" >&2
    exit 1
fi

log="$(mktemp -t ensure-postgres.XXXXXX.log)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update && apt-get install -y postgresql; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "ensure-postgres: apt-get install postgresql failed (output above)" >&2
    exit 1
fi

if ! initdb_path="$(find_initdb)"; then
    cat "$log" >&2
    echo "ensure-postgres: installed postgresql but found no initdb under /usr/lib/postgresql" >&2
    exit 1
fi
echo "ensure-postgres: installed PostgreSQL server via apt-get ($initdb_path)"

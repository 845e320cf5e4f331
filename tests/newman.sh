#!/usr/bin/env bash
# Runs the bundled Postman collection (docs/postman/) with newman against a freshly started
# incidentd on 127.0.0.1, and exits with newman's status.
#
#   bash tests/newman.sh [path/to/incidentd]      # default: target/debug/incidentd
#
# Builds nothing: build the binary first (`cargo build`; `cargo test` builds it too). Needs npm
# (Node.js 16 or newer) unless newman 6 is already on PATH; newman is installed into a temporary
# prefix (or $NEWMAN_PREFIX, to reuse one), never into this repository.
set -euo pipefail

bin=${1:-target/debug/incidentd}
case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
cd "$(dirname "$0")/.."
collection=docs/postman/incidentd.postman_collection.json
environment=docs/postman/incidentd.postman_environment.json

if [ ! -x "$bin" ]; then
  echo "newman.sh: no incidentd binary at $bin; build it first (cargo build)" >&2
  exit 2
fi

# shellcheck source=tests/server.sh
source tests/server.sh
make_workdir newman

# --- newman --------------------------------------------------------------------------------
newman=
if command -v newman >/dev/null 2>&1 && newman --version 2>/dev/null | grep -q '^6\.'; then
  newman=$(command -v newman)
else
  if ! command -v npm >/dev/null 2>&1; then
    echo "newman.sh: npm not found; install Node.js and npm (Debian: apt-get install -y nodejs npm)" >&2
    exit 2
  fi
  prefix=${NEWMAN_PREFIX:-$work/npm}
  if [ ! -x "$prefix/node_modules/.bin/newman" ]; then
    echo "== installing newman@6 into $prefix"
    started=$SECONDS
    mkdir -p "$prefix"
    npm install --no-save --no-audit --no-fund --no-package-lock --loglevel=error \
      --prefix "$prefix" newman@6 >"$work/npm.log" 2>&1 || {
      cat "$work/npm.log" >&2
      echo "newman.sh: npm install newman@6 failed" >&2
      exit 2
    }
    echo "   done in $((SECONDS - started)) s"
  fi
  newman=$prefix/node_modules/.bin/newman
fi
echo "== newman $("$newman" --version) (node $(node --version 2>/dev/null || echo '?'))"

# --- a fresh server --------------------------------------------------------------------------
start_server "$bin" "$work"

# --- the collection --------------------------------------------------------------------------
started=$SECONDS
status=0
"$newman" run "$collection" \
  --environment "$environment" \
  --env-var "baseUrl=$base_url" \
  --env-var "adminToken=$admin_token" \
  --reporters cli --color off \
  --timeout-request 30000 --timeout 300000 || status=$?
echo "== newman exited $status after $((SECONDS - started)) s"

if [ "$status" -ne 0 ]; then
  echo "== incidentd log (last 50 lines)" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit "$status"

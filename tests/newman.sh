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

work=$(mktemp -d "${TMPDIR:-/tmp}/incidentd-newman.XXXXXX")
server_pid=
stop_server() {
  [ -n "$server_pid" ] || return 0
  if kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    # Bounded wait for the graceful shutdown (checkpoint), then force.
    for _ in $(seq 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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
# Nothing from the caller's environment may steer the server elsewhere (public URL, data dir,
# log filter or format): start it from a clean INCIDENTD_* slate.
while read -r name; do unset "$name"; done < <(compgen -e | grep '^INCIDENTD_' || true)
admin_token=adm_$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
log=$work/server.log
INCIDENTD_ADMIN_TOKEN=$admin_token RUST_LOG=info NO_COLOR=1 \
  "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$log" 2>&1 &
server_pid=$!

# Wait (at most 60 s) for the line that names the bound address.
base_url=
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
  base_url=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' |
    head -n1 | sed 's/^listening on //' || true)
  [ -n "$base_url" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "newman.sh: incidentd exited before listening; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$base_url" ]; then
  echo "newman.sh: incidentd did not log 'listening on http://127.0.0.1:...' within 60 s; its log:" >&2
  cat "$log" >&2
  exit 1
fi
echo "== incidentd listening on $base_url (data in $work/data)"

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
  tail -n 50 "$log" >&2
fi
exit "$status"

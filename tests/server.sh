# Sourced by the scripts under tests/ that drive the real binary from outside (newman, the
# browser tests): starts one incidentd on 127.0.0.1 with a fresh data directory and stops it.
#
#   make_workdir NAME          # sets work to a new temporary folder; on exit stops the server
#                              # and removes the folder
#   start_server BIN WORKDIR   # sets server_pid, base_url, admin_token; log in WORKDIR/server.log
#   stop_server                # SIGTERM, a bounded wait for the graceful shutdown, then SIGKILL

server_pid=
base_url=
admin_token=
work=

make_workdir() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/incidentd-$1.XXXXXX")
  trap 'stop_server; rm -rf "$work"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

start_server() {
  local bin=$1 work=$2
  # Nothing from the caller's environment may steer the server elsewhere (public URL, data dir,
  # log filter or format): start it from a clean INCIDENTD_* slate.
  while read -r name; do unset "$name"; done < <(compgen -e | grep '^INCIDENTD_' || true)
  admin_token=adm_$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
  local log=$work/server.log
  INCIDENTD_ADMIN_TOKEN=$admin_token RUST_LOG=info NO_COLOR=1 \
    "$bin" serve --listen 127.0.0.1:0 --data-dir "$work/data" >"$log" 2>&1 &
  server_pid=$!

  # Wait (at most 60 s) for the line that names the bound address.
  local deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    base_url=$(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' |
      head -n1 | sed 's/^listening on //' || true)
    [ -n "$base_url" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "incidentd exited before listening; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  if [ -z "$base_url" ]; then
    echo "incidentd did not log 'listening on http://127.0.0.1:...' within 60 s; its log:" >&2
    cat "$log" >&2
    return 1
  fi
  echo "== incidentd listening on $base_url (data in $work/data)"
}

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

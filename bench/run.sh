#!/usr/bin/env bash
# bench/run.sh: runs the benchmarks of issue 5 and prints one table of figures, ratios and targets.
#
#   bash bench/run.sh              # full size: a 1,000,000-event log over 100,000 monitors
#   EVENTS=100000 bash bench/run.sh   # a quicker run on a smaller log
#   bash bench/run.sh --install    # also apt-get install prometheus-alertmanager when missing
#
# What it measures, all on 127.0.0.1 and all in this one run:
#   1. Ingest over HTTP: `loadgen http` (64 keep-alive senders, realistic Postman runs over 1,000
#      monitors) against a freshly started `incidentd serve --rate-limit 0` on a temporary data
#      directory, and, when prometheus-alertmanager is installed, against Alertmanager in memory
#      with one alert per POST over the same 1,000 monitors. ROUNDS rounds, alternating the order.
#   2. Seeding: `loadgen seed` writes EVENTS events over SEED_MONITORS monitors into a data dir
#      through the engine; disk bytes per event are read from that directory.
#   3. Replay: `incidentd replay` on that directory (its own duration_ms, and the wall time).
#   4. Start-up: time from starting `incidentd serve` on that directory to /healthz answering 200,
#      STARTS times; the server's RSS (VmRSS, VmHWM from /proc/PID/status) after start-up.
#   5. Time travel: `GET /v1/state?at_seq=N` at a few N on that server, and its RSS right after
#      the last answer and once it has settled (the server frees each answer's state after
#      sending it).
#
# Settings (environment): EVENTS (1000000), SEED_MONITORS (100000), MONITORS (1000),
# CONCURRENCY (64), FAILING_PERCENT (20), SECONDS_PER_RUN (10), WARMUP (1), ROUNDS (3),
# STARTS (3), STATE_REPEAT (1), QUIET_ROW (1: one more incidentd run with the access log off),
# PERF (0; 1 profiles incidentd during the first ingest run with `perf record -e cpu-clock`),
# OUT_DIR (bench/out/<UTC time>), KEEP (0; 1 keeps the temporary data directories),
# CODE_LABEL (what the header names as the code measured; the git commit by default).
#
# Every process it starts is stopped on exit (trap), every benchmark step has a time limit, and
# nothing is sent anywhere but 127.0.0.1.
set -euo pipefail

INSTALL=0
for arg in "$@"; do
    case "$arg" in
        --install) INSTALL=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "unknown argument: $arg (see --help)" >&2
            exit 2
            ;;
    esac
done

EVENTS=${EVENTS:-1000000}
SEED_MONITORS=${SEED_MONITORS:-100000}
MONITORS=${MONITORS:-1000}
CONCURRENCY=${CONCURRENCY:-64}
FAILING_PERCENT=${FAILING_PERCENT:-20}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
STARTS=${STARTS:-3}
STATE_REPEAT=${STATE_REPEAT:-1}
QUIET_ROW=${QUIET_ROW:-1}
PERF=${PERF:-0}
KEEP=${KEEP:-0}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
OUT_DIR=${OUT_DIR:-$ROOT/bench/out/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/incidentd-bench.XXXXXX")
PIDS=()

# Stops every process this script started that is still running, then removes the temporary
# directories, whatever way the script ends.
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if [[ $KEEP == 1 ]]; then
        echo "kept the data directories in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() {
    printf '[%s, load %s] %s\n' "$(date -u +%H:%M:%S)" "$(cut -d' ' -f1-3 /proc/loadavg)" "$*" >&2
}

# The value of a numeric (or numeric-string) field of a JSON object printed by loadgen or
# incidentd; empty when absent. Good enough for these flat, machine-written objects.
jget() {
    printf '%s' "$1" | tr -d ' \n' | sed -n "s/.*\"$2\":\"\{0,1\}\([-0-9.eE+]*\).*/\1/p" | head -n1
}

# awk arithmetic on up to three inputs, named a, b and c in the expression, printed with a printf
# format; prints "-" when any input is empty.
calc() {
    local format=$1 expr=$2
    shift 2
    local v
    for v in "$@"; do
        [[ -n $v ]] || {
            printf -- '-'
            return
        }
    done
    awk -v f="$format" -v a="${1:-0}" -v b="${2:-0}" -v c="${3:-0}" "BEGIN { printf f, $expr }"
}

# Mean of the arguments that are not empty; empty when none is.
mean() {
    printf '%s\n' "$@" | awk 'NF { s += $1; n++ } END { if (n) printf "%.3f", s / n }'
}

# Resident memory of a process in MiB: VmRSS (now) or VmHWM (peak).
mem_mb() {
    awk -v k="$2:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || true
}

# VmRSS of a process once it has stopped falling: three readings 200 ms apart within 1 MiB of
# each other (at most about 10 s), in MiB.
settled_rss() {
    local pid=$1 a b c _
    a=$(mem_mb "$pid" VmRSS)
    sleep 0.2
    b=$(mem_mb "$pid" VmRSS)
    c=$b
    for _ in $(seq 1 50); do
        sleep 0.2
        c=$(mem_mb "$pid" VmRSS)
        if awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN {
            d = a - c; if (d < 0) d = -d; e = b - c; if (e < 0) e = -e; exit !(d < 1 && e < 1) }'; then
            break
        fi
        a=$b
        b=$c
    done
    echo "$c"
}

# CPU time a process has used so far (user + system, all threads), in clock ticks.
cpu_ticks() {
    awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || true
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# Sends SIGTERM and waits (at most 120 s, then SIGKILL) for a process this script started.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

for tool in cargo timeout awk sed du; do
    command -v "$tool" >/dev/null || {
        echo "bench/run.sh needs $tool" >&2
        exit 1
    }
done

log "results and logs go to $OUT_DIR"
log "building in release mode"
cargo build --release --bin incidentd --bin loadgen >"$OUT_DIR/build.log" 2>&1 || {
    tail -n 30 "$OUT_DIR/build.log" >&2
    exit 1
}
INCIDENTD=$ROOT/target/release/incidentd
LOADGEN=$ROOT/target/release/loadgen

# A fresh admin token for the servers of this run; it is passed through the environment only,
# never on a command line.
INCIDENTD_ADMIN_TOKEN=adm_bench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export INCIDENTD_ADMIN_TOKEN

# ------------------------------------------------------------------------------------------
# Alertmanager: found, or installed from Debian's packages when allowed.
# ------------------------------------------------------------------------------------------
find_alertmanager() {
    command -v prometheus-alertmanager || command -v alertmanager || true
}
AM_BIN=$(find_alertmanager)
if [[ -z $AM_BIN ]] && { [[ $INSTALL == 1 ]] || [[ $(id -u) == 0 ]]; } && command -v apt-cache >/dev/null; then
    candidate() { apt-cache policy prometheus-alertmanager 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
    CANDIDATE=$(candidate)
    if [[ -z $CANDIDATE || $CANDIDATE == "(none)" ]] && [[ $(id -u) == 0 ]]; then
        # The package lists may never have been fetched on a fresh machine.
        apt-get update -qq >"$OUT_DIR/apt.log" 2>&1 || true
        CANDIDATE=$(candidate)
    fi
    if [[ -n $CANDIDATE && $CANDIDATE != "(none)" ]]; then
        SUDO=()
        [[ $(id -u) == 0 ]] || SUDO=(sudo)
        log "installing prometheus-alertmanager $CANDIDATE"
        if "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager >>"$OUT_DIR/apt.log" 2>&1; then
            AM_BIN=$(find_alertmanager)
            log "note: the Debian package may enable its own system service; this benchmark runs a separate instance on a loopback port"
        else
            log "installing prometheus-alertmanager failed; see $OUT_DIR/apt.log"
        fi
    else
        log "prometheus-alertmanager is not available from apt here"
    fi
fi
if [[ -n $AM_BIN ]]; then
    AM_VERSION=$("$AM_BIN" --version 2>&1 | head -n1)
    log "Alertmanager: $AM_VERSION"
else
    AM_VERSION="not installed"
    log "Alertmanager is not installed: its rows are skipped (pass --install to install it)"
fi

# ------------------------------------------------------------------------------------------
# Servers.
# ------------------------------------------------------------------------------------------

# Starts `incidentd serve` on data dir $1 (log to $2) and waits for /healthz. Sets SRV_PID,
# SRV_PORT and STARTUP_MS (process start to the first 200, as seen by the poller).
start_incidentd() {
    local dir=$1 logfile=$2 t0 out at
    SRV_PORT=$("$LOADGEN" free-port)
    t0=$(date +%s%N)
    "$INCIDENTD" serve --data-dir "$dir" --listen "127.0.0.1:$SRV_PORT" --rate-limit 0 >"$logfile" 2>&1 &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
    if ! out=$("$LOADGEN" wait --url "http://127.0.0.1:$SRV_PORT/healthz" --pid "$SRV_PID" --timeout 600); then
        tail -n 20 "$logfile" >&2
        return 1
    fi
    at=$(jget "$out" healthy_at_unix_ns)
    STARTUP_MS=$(awk -v a="$at" -v b="$t0" 'BEGIN { printf "%.0f", (a - b) / 1e6 }')
    # How much of that went to opening the store and loading the projections: the engine logs
    # "projections ready" (with a UTC time stamp) once they are caught up.
    local ready
    ready=$(sed -n 's/^\([0-9T:.-]*Z\) .*projections ready.*/\1/p' "$logfile" | head -n1)
    READY_MS=""
    if [[ -n $ready ]] && ready=$(date -d "$ready" +%s%N 2>/dev/null); then
        READY_MS=$(awk -v a="$ready" -v b="$t0" 'BEGIN { printf "%.0f", (a - b) / 1e6 }')
    fi
}

# Starts Alertmanager in memory on a loopback port, with clustering off and its (empty)
# silence and notification-log files in a temporary directory. Sets AM_PID and AM_PORT.
start_alertmanager() {
    local dir=$1
    mkdir -p "$dir/data"
    # One receiver that notifies nobody: the benchmark measures taking alerts in, not sending them.
    printf 'route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n' >"$dir/alertmanager.yml"
    AM_PORT=$("$LOADGEN" free-port)
    "$AM_BIN" --config.file="$dir/alertmanager.yml" --storage.path="$dir/data" \
        --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= \
        --log.level=warn >"$dir/alertmanager.log" 2>&1 &
    AM_PID=$!
    PIDS+=("$AM_PID")
    "$LOADGEN" wait --url "http://127.0.0.1:$AM_PORT/-/ready" --pid "$AM_PID" --timeout 120 >/dev/null || {
        tail -n 20 "$dir/alertmanager.log" >&2
        return 1
    }
}

# Runs the load generator against URL $2 (--url or --alertmanager per $1), labelled $3; prints
# its JSON report.
run_load() {
    timeout $((SECONDS_PER_RUN + WARMUP + 120)) "$LOADGEN" http "$1" "$2" --label "$3" \
        --concurrency "$CONCURRENCY" --monitors "$MONITORS" --failing-percent "$FAILING_PERCENT" \
        --seconds "$SECONDS_PER_RUN" --warmup "$WARMUP" --json 2>>"$OUT_DIR/loadgen.log"
}

declare -A R # results: R[<row>.<field>]
ROWS=()      # ingest rows in the order run

record_load() {
    local row=$1 json=$2 rss=$3 ticks=$4
    ROWS+=("$row")
    printf '%s\n' "$json" >>"$OUT_DIR/ingest.jsonl"
    local field
    for field in requests_per_s p50_ms p90_ms p99_ms max_ms errors ok warmup_ok client_cpu_us_per_request; do
        R[$row.$field]=$(jget "$json" "$field")
    done
    R[$row.rss]=$rss
    # The server's CPU per answered request, over warm-up and measuring window alike.
    R[$row.server_us]=$(calc '%.0f' 'a / '"$CLK_TCK"' * 1e6 / (b + c)' "$ticks" "${R[$row.ok]}" "${R[$row.warmup_ok]}")
    R[$row.load]=$(cut -d' ' -f1 /proc/loadavg)
}

ingest_incidentd() {
    local row=$1 rust_log=$2 profile=${3:-0}
    local dir=$WORK/$row hook json ticks perf_pid=""
    mkdir -p "$dir"
    log "ingest: $row (RUST_LOG=$rust_log)"
    RUST_LOG=$rust_log start_incidentd "$dir/data" "$dir/incidentd.log"
    hook=$("$LOADGEN" integration --server "http://127.0.0.1:$SRV_PORT" --name "bench $row")
    if [[ $profile == 1 ]]; then
        perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$SRV_PID" \
            -o "$WORK/ingest.perf" -- sleep "$((SECONDS_PER_RUN + WARMUP))" >"$OUT_DIR/perf.log" 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    ticks=$(cpu_ticks "$SRV_PID")
    json=$(run_load --url "$hook" "$row") || json='{}'
    ticks=$(($(cpu_ticks "$SRV_PID") - ticks))
    [[ -z $perf_pid ]] || wait "$perf_pid" || true
    record_load "$row" "$json" "$(mem_mb "$SRV_PID" VmHWM)" "$ticks"
    # Group commit as the server saw it, from its Prometheus metrics (absent in builds without
    # them): events per fsynced batch and the mean fsync time, over the server's whole life.
    local metrics
    metrics=$("$LOADGEN" get --url "http://127.0.0.1:$SRV_PORT/metrics" --repeat 1 --body 2>/dev/null) || metrics=""
    R[$row.per_sync]=$(awk '$1 == "incidentd_commit_batch_events_sum" { s = $2 }
        $1 == "incidentd_commit_batch_events_count" { n = $2 }
        END { if (n > 0) printf "%.1f", s / n }' <<<"$metrics")
    R[$row.fsync_ms]=$(awk '$1 == "incidentd_fsync_seconds_sum" { s = $2 }
        $1 == "incidentd_fsync_seconds_count" { n = $2 }
        END { if (n > 0) printf "%.2f", s / n * 1000 }' <<<"$metrics")
    stop_pid "$SRV_PID"
    if [[ $profile == 1 && -s $WORK/ingest.perf ]]; then
        log "writing the profile reports"
        timeout 600 perf report -i "$WORK/ingest.perf" --no-children --sort comm --stdio -g none -n \
            >"$OUT_DIR/perf-ingest-threads.txt" 2>/dev/null || true
        timeout 600 perf report -i "$WORK/ingest.perf" --children --sort comm,symbol --stdio -g none \
            --percent-limit 1 >"$OUT_DIR/perf-ingest-symbols.txt" 2>/dev/null || true
    fi
}

ingest_alertmanager() {
    local row=$1 dir=$WORK/$1 json ticks
    mkdir -p "$dir"
    log "ingest: $row"
    start_alertmanager "$dir"
    ticks=$(cpu_ticks "$AM_PID")
    json=$(run_load --alertmanager "http://127.0.0.1:$AM_PORT/api/v2/alerts" "$row") || json='{}'
    ticks=$(($(cpu_ticks "$AM_PID") - ticks))
    record_load "$row" "$json" "$(mem_mb "$AM_PID" VmHWM)" "$ticks"
    stop_pid "$AM_PID"
}

# ------------------------------------------------------------------------------------------
# The run.
# ------------------------------------------------------------------------------------------
# What was measured: CODE_LABEL when given (e.g. for an exported tree), else the git commit.
if [[ -n ${CODE_LABEL:-} ]]; then
    CODE=$CODE_LABEL
elif CODE=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD 2>/dev/null || CODE+=" + uncommitted changes"
else
    CODE="unknown (not a git checkout)"
fi
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
START_TIME=$(date -u +%Y-%m-%dT%H:%M:%SZ)

for round in $(seq "$ROUNDS"); do
    profile=0
    [[ $PERF == 1 && $round == 1 ]] && command -v perf >/dev/null && profile=1
    # Alternate the order, so that a machine that gets busier or quieter during the run does not
    # favour one side.
    if ((round % 2 == 1)) || [[ -z $AM_BIN ]]; then
        ingest_incidentd "incidentd-$round" info "$profile"
        [[ -z $AM_BIN ]] || ingest_alertmanager "alertmanager-$round"
    else
        ingest_alertmanager "alertmanager-$round"
        ingest_incidentd "incidentd-$round" info "$profile"
    fi
done
if [[ $QUIET_ROW == 1 ]]; then
    ingest_incidentd "incidentd-no-access-log" warn
fi

SEED_DIR=$WORK/seeded
log "seeding $EVENTS events over $SEED_MONITORS monitors"
SEED_JSON=$(timeout 7200 "$LOADGEN" seed --data-dir "$SEED_DIR" --events "$EVENTS" \
    --monitors "$SEED_MONITORS" --failing-percent "$FAILING_PERCENT" --json 2>>"$OUT_DIR/seed.log")
printf '%s\n' "$SEED_JSON" >"$OUT_DIR/seed.json"
SEED_RATE=$(jget "$SEED_JSON" runs_per_s)
SEED_MONITORS_SEEN=$(jget "$SEED_JSON" monitors)
EVENT_BYTES=$(jget "$SEED_JSON" event_bytes)
DISK_BYTES=$(du -sb "$SEED_DIR" | cut -f1)
DISK_ALLOCATED=$(du -sB1 "$SEED_DIR" | cut -f1)

log "replaying the seeded log"
T0=$(date +%s%N)
REPLAY_JSON=$(timeout 7200 "$INCIDENTD" replay --data-dir "$SEED_DIR" 2>"$OUT_DIR/replay.log")
T1=$(date +%s%N)
printf '%s\n' "$REPLAY_JSON" >"$OUT_DIR/replay.json"
REPLAYED=$(jget "$REPLAY_JSON" events_replayed)
REPLAY_MS=$(jget "$REPLAY_JSON" duration_ms)
REPLAY_WALL_MS=$(awk -v a="$T1" -v b="$T0" 'BEGIN { printf "%.0f", (a - b) / 1e6 }')
REPLAY_RATE=$(awk -v a="$REPLAYED" -v b="$REPLAY_MS" 'BEGIN { if (b > 0) printf "%.0f", a / b * 1000 }')

STARTUP_LIST=()
READY_LIST=()
for start in $(seq "$STARTS"); do
    log "start-up $start of $STARTS on the seeded directory"
    start_incidentd "$SEED_DIR" "$OUT_DIR/serve-seeded-$start.log"
    STARTUP_LIST+=("$STARTUP_MS")
    READY_LIST+=("${READY_MS:--}")
    RSS_STARTED=$(mem_mb "$SRV_PID" VmRSS)
    HWM_STARTED=$(mem_mb "$SRV_PID" VmHWM)
    FOLDED=$(sed -n 's/.*events_folded=\([0-9]*\).*/\1/p' "$OUT_DIR/serve-seeded-$start.log" | head -n1)
    if ((start < STARTS)); then
        stop_pid "$SRV_PID"
    fi
done
STARTUP_MEDIAN=$(printf '%s\n' "${STARTUP_LIST[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')

# Time travel at the start, a tenth, the middle and the head of the log.
# EVENTS - 1 is the farthest from a projection snapshot (one every 50,000 events): the query folds
# 49,999 events on top of the one before it. The other seqs fall on snapshots.
STATE_SEQS=(1 $((EVENTS / 10)) $((EVENTS / 2)) $((EVENTS - 1)) "$EVENTS")
declare -A STATE_MS STATE_BYTES
for seq in "${STATE_SEQS[@]}"; do
    log "GET /v1/state?at_seq=$seq"
    if out=$("$LOADGEN" get --url "http://127.0.0.1:$SRV_PORT/v1/state?at_seq=$seq" \
        --repeat "$STATE_REPEAT" --timeout 1200 --json); then
        printf '%s\n' "$out" >>"$OUT_DIR/state.jsonl"
        STATE_MS[$seq]=$(jget "$out" median_ms)
        STATE_BYTES[$seq]=$(jget "$out" bytes)
    else
        STATE_MS[$seq]=""
        STATE_BYTES[$seq]=""
    fi
done
RSS_AT_LAST_ANSWER=$(mem_mb "$SRV_PID" VmRSS)
HWM_AFTER_STATE=$(mem_mb "$SRV_PID" VmHWM)
# The server drops the state behind a time-travel answer, and gives its memory back, only after
# the last byte is sent, so RSS read at once still counts that state: wait until it settles.
RSS_AFTER_STATE=$(settled_rss "$SRV_PID")
stop_pid "$SRV_PID"
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------------------------------
# The table.
# ------------------------------------------------------------------------------------------
verdict() { # value, comparison (ge|lt), target
    [[ -n $1 ]] || {
        printf 'not measured'
        return
    }
    awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
        ok = (op == "ge") ? (v >= t) : (v < t)
        if (ok) printf "met"
        else if (op == "ge") printf "missed: %.2fx of the target", v / t
        else printf "missed: %.1fx the limit", v / t
    }'
}

inc_rows=() am_rows=()
for row in "${ROWS[@]}"; do
    case $row in
        incidentd-[0-9]*) inc_rows+=("$row") ;;
        alertmanager-*) am_rows+=("$row") ;;
    esac
done
avg_of() { # field, rows...
    local field=$1 row values=()
    shift
    for row in "$@"; do values+=("${R[$row.$field]:-}"); done
    mean "${values[@]}"
}
INC_RATE=$(avg_of requests_per_s "${inc_rows[@]}")
INC_P99=$(avg_of p99_ms "${inc_rows[@]}")
AM_RATE=""
AM_P99=""
if ((${#am_rows[@]})); then
    AM_RATE=$(avg_of requests_per_s "${am_rows[@]}")
    AM_P99=$(avg_of p99_ms "${am_rows[@]}")
fi
RATIO=$(calc '%.2f' 'a / b' "$INC_RATE" "$AM_RATE")
INC_RSS=$(avg_of rss "${inc_rows[@]}")
INC_CPU=$(avg_of server_us "${inc_rows[@]}")
AM_RSS=""
AM_CPU=""
if ((${#am_rows[@]})); then
    AM_RSS=$(avg_of rss "${am_rows[@]}")
    AM_CPU=$(avg_of server_us "${am_rows[@]}")
fi

{
    echo "# incidentd benchmarks (issue 5)"
    echo
    echo "- started $START_TIME, code: $CODE"
    echo "- $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(uname -sr), $(rustc --version 2>/dev/null)"
    echo "- load average (1, 5, 15 min) at start: $START_LOAD; at end: $END_LOAD"
    echo "- Alertmanager: $AM_VERSION"
    echo "- ingest: $CONCURRENCY senders, $MONITORS monitors, $FAILING_PERCENT% failing, ${WARMUP} s warm-up + ${SECONDS_PER_RUN} s per run, $ROUNDS rounds"
    echo "- seeded log: $EVENTS events over $SEED_MONITORS monitors ($SEED_MONITORS_SEEN reported), seeded at ${SEED_RATE:-?} runs/s"
    echo
    echo "Ingest over HTTP, each run (2xx per second; latency of 2xx answers; RSS = peak of the server;"
    echo "CPU = microseconds of CPU per 2xx answer, of the server and of the load generator;"
    echo "events/fsync and fsync ms = incidentd's group commit, from its /metrics):"
    echo
    echo "| run | 2xx per s | p50 ms | p90 ms | p99 ms | max ms | errors | server peak RSS MiB | server CPU us | loadgen CPU us | events/fsync | fsync ms | load avg |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for row in "${ROWS[@]}"; do
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$row" \
            "$(calc '%.0f' 'a' "${R[$row.requests_per_s]}")" "${R[$row.p50_ms]:--}" \
            "${R[$row.p90_ms]:--}" "${R[$row.p99_ms]:--}" "${R[$row.max_ms]:--}" \
            "${R[$row.errors]:--}" "${R[$row.rss]:--}" "${R[$row.server_us]:--}" \
            "$(calc '%.0f' 'a' "${R[$row.client_cpu_us_per_request]}")" "${R[$row.per_sync]:--}" \
            "${R[$row.fsync_ms]:--}" "${R[$row.load]:--}"
    done
    echo
    echo "Summary and targets:"
    echo
    echo "| figure | incidentd | Alertmanager | incidentd / Alertmanager | target | verdict |"
    echo "|---|---:|---:|---:|---|---|"
    echo "| ingest, 2xx per s (mean of rounds) | $(calc '%.0f' a "$INC_RATE") | $(calc '%.0f' a "$AM_RATE") | $RATIO | >= 1.25x Alertmanager | $(verdict "$RATIO" ge 1.25) |"
    echo "| ingest p99 ms (mean of rounds) | $(calc '%.2f' a "$INC_P99") | $(calc '%.2f' a "$AM_P99") | $(calc '%.2f' 'a / b' "$INC_P99" "$AM_P99") | < 10 ms | $(verdict "$INC_P99" lt 10) |"
    echo "| replay of $REPLAYED events, events/s | ${REPLAY_RATE:--} | | | >= 1,000,000/s | $(verdict "$REPLAY_RATE" ge 1000000) |"
    echo "| replay: rebuild ms (its duration_ms) / command wall ms | $REPLAY_MS / $REPLAY_WALL_MS | | | | |"
    echo "| start-up to healthy ms, median of $STARTS (all: ${STARTUP_LIST[*]}) | $STARTUP_MEDIAN | | | < 1000 ms | $(verdict "$STARTUP_MEDIAN" lt 1000) |"
    echo "| of which until \"projections ready\" (store open, checkpoint loaded), ms (all) | ${READY_LIST[*]} | | | | |"
    echo "| events folded at start-up (0: checkpoint used) | ${FOLDED:--} | | | | |"
    for seq in "${STATE_SEQS[@]}"; do
        echo "| GET /v1/state?at_seq=$seq ms (answer bytes) | ${STATE_MS[$seq]:--} (${STATE_BYTES[$seq]:--}) | | | < 500 ms | $(verdict "${STATE_MS[$seq]}" lt 500) |"
    done
    echo "| RSS after start-up MiB ($EVENTS events, $SEED_MONITORS_SEEN monitors) | $RSS_STARTED (peak $HWM_STARTED) | | | < 300 MB | $(verdict "$(calc '%.1f' 'a * 1.048576' "$HWM_STARTED")" lt 300) |"
    echo "| RSS right after the last time-travel answer MiB (peak during the queries) | $RSS_AT_LAST_ANSWER (peak $HWM_AFTER_STATE) | | | | |"
    echo "| RSS after the time-travel queries, settled, MiB | $RSS_AFTER_STATE | | | < 300 MB | $(verdict "$(calc '%.1f' 'a * 1.048576' "$RSS_AFTER_STATE")" lt 300) |"
    echo "| disk bytes per event, apparent / allocated (mean stored event: ${EVENT_BYTES:-?} bytes) | $(calc '%.0f' 'a / b' "$DISK_BYTES" "$EVENTS") / $(calc '%.0f' 'a / b' "$DISK_ALLOCATED" "$EVENTS") | | | reported | |"
    echo "| ingest server CPU per 2xx, us (mean of rounds) | $(calc '%.0f' a "$INC_CPU") | $(calc '%.0f' a "$AM_CPU") | $(calc '%.2f' 'a / b' "$INC_CPU" "$AM_CPU") | | |"
    echo "| ingest server peak RSS MiB (mean of rounds) | $(calc '%.1f' a "$INC_RSS") | $(calc '%.1f' a "$AM_RSS") | $(calc '%.2f' 'a / b' "$INC_RSS" "$AM_RSS") | | |"
} | tee "$OUT_DIR/results.md"
log "done; the table is in $OUT_DIR/results.md"

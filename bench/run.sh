#!/usr/bin/env bash
# End-to-end benchmarks of prefixcache: builds in release mode, starts the mock
# upstream, the proxy, Redis and (with --peers) LiteLLM on loopback, drives them with oha
# and bench_client, stops everything it started by pid, and prints one table.
# See bench/README.md for what each scenario measures.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bench/run.sh [--quick] [--only LIST] [--peers] [--no-build] [--out DIR]

  --quick       short runs (about 2 minutes in all): every scenario works end to end, the
                figures are indicative only
  --only LIST   comma-separated scenarios to run, from: hit, miss, stream, redis, article,
                memory, peers (or their numbers 1-6; "memory" is m). Default: all but peers
  --peers       also run scenario 6 (LiteLLM with a Redis cache; needs pip, see README)
  --no-build    use the binaries already in target/release
  --out DIR     where raw results go (default: bench/out/<date>-<time>)
  --proxy-log F the proxy's RUST_LOG filter (default: unset, i.e. the default `info`,
                which logs one line per request as a user's proxy would)

Environment: OHA (path of oha), REDIS_SERVER, REDIS_BENCHMARK, PYTHON (for --peers).
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
ONLY=""
PEERS=0
BUILD=1
OUT=""
PROXY_LOG="${PROXY_LOG-}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY="$2"; shift ;;
        --peers) PEERS=1 ;;
        --no-build) BUILD=0 ;;
        --out) OUT="$2"; shift ;;
        --proxy-log) PROXY_LOG="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

# Which scenarios run.
declare -A RUN=()
if [[ -z "$ONLY" ]]; then
    for s in hit miss stream redis article memory; do RUN[$s]=1; done
    [[ $PEERS == 1 ]] && RUN[peers]=1
else
    IFS=, read -ra picked <<<"$ONLY"
    for s in "${picked[@]}"; do
        case "$s" in
            1|hit) RUN[hit]=1 ;;
            2|miss) RUN[miss]=1 ;;
            3|stream) RUN[stream]=1 ;;
            4|redis) RUN[redis]=1 ;;
            5|article) RUN[article]=1 ;;
            m|mem|memory) RUN[memory]=1 ;;
            6|peers|litellm) RUN[peers]=1 ;;
            *) echo "unknown scenario: $s" >&2; exit 2 ;;
        esac
    done
fi
want() { [[ -n "${RUN[$1]-}" ]]; }

# Run sizes: the full runs docs/BENCHMARKS.md reports, and a quick variant.
if [[ $QUICK == 1 ]]; then
    HIT_N=5000; MISS_N=3000; MISS_SEQ_N=200; STREAM_N=60
    ARTICLE_N=1000; ARTICLE_LATENCY="lognormal:mean=125ms,p99=342ms"
    FILL_N=300; PEER_HIT_N=1000; PEER_MISS_N=500
else
    HIT_N=50000; MISS_N=20000; MISS_SEQ_N=1000; STREAM_N=400
    ARTICLE_N=10000; ARTICLE_LATENCY="lognormal:mean=1247ms,p99=3421ms"
    FILL_N=600; PEER_HIT_N=5000; PEER_MISS_N=2000
fi
CONC=50
MISS_LATENCY=20ms
LITELLM_VERSION="${LITELLM_VERSION:-1.108.0}"

OUT="${OUT:-$ROOT/bench/out/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/prefixcache-bench.XXXXXX")"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/release/prefixcache"
CLIENT="$TARGET/release/examples/bench_client"
OHA="${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}"
REDIS_SERVER="${REDIS_SERVER:-$(command -v redis-server || true)}"
REDIS_BENCHMARK="${REDIS_BENCHMARK:-$(command -v redis-benchmark || true)}"
PYTHON="${PYTHON:-python3}"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
note() { printf '%s\t%s\n' "$1" "$2" >>"$OUT/notes.tsv"; log "$1: $2"; }

# --- processes: everything started here is stopped here, by pid -----------------------
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # stop PID: stop one process now and forget it
    local pid="$1" p
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=()
    for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# start NAME PATTERN CMD...: runs CMD in the background (output in $OUT/NAME.log), waits
# for PATTERN (an ERE whose first capture group is the URL) and sets STARTED_PID and
# STARTED_URL.
start() {
    local name="$1" pattern="$2"
    shift 2
    "$@" >"$OUT/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    for _ in $(seq 600); do
        if [[ $(grep -Eo "$pattern" "$OUT/$name.log" 2>/dev/null | head -1) =~ $pattern ]]; then
            STARTED_URL="${BASH_REMATCH[1]}"
            return 0
        fi
        if ! kill -0 "$STARTED_PID" 2>/dev/null; then
            log "$name exited before it was ready:"; tail -20 "$OUT/$name.log" >&2
            return 1
        fi
        sleep 0.1
    done
    log "$name did not become ready in 60 s"; tail -20 "$OUT/$name.log" >&2
    return 1
}

start_mock() { # start_mock NAME [FLAGS...] -> MOCK_URL, MOCK_PID
    local name="$1"; shift
    start "$name" 'mock-upstream listening on (http://[0-9.:]+)' \
        "$BIN" mock-upstream --listen 127.0.0.1:0 "$@" || return 1
    MOCK_URL="$STARTED_URL"; MOCK_PID="$STARTED_PID"
}

start_proxy() { # start_proxy NAME UPSTREAM STORE [FLAGS...] -> PROXY_URL, PROXY_PID
    local name="$1" upstream="$2" store="$3"; shift 3
    local dir="$WORK/$name"
    mkdir -p "$dir"
    if [[ -n "$PROXY_LOG" ]]; then export RUST_LOG="$PROXY_LOG"; fi
    start "$name" 'prefixcache listening on (http://[0-9.:]+)' \
        "$BIN" serve --listen 127.0.0.1:0 --upstream "$upstream" --store "$store" \
        --data-dir "$dir" "$@" || return 1
    PROXY_URL="$STARTED_URL"; PROXY_PID="$STARTED_PID"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_redis() { # -> REDIS_PORT, REDIS_PID
    REDIS_PORT="$(free_port)"
    start "redis-$REDIS_PORT" '(Ready to accept connections)' \
        "$REDIS_SERVER" --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        --dir "$WORK" || return 1
    REDIS_PID="$STARTED_PID"
}

# --- load --------------------------------------------------------------------------------
HDR=(-H 'content-type: application/json' -H 'authorization: Bearer sk-bench')

# oha_run ID URL N C [oha flags...]: one oha run, its JSON in $OUT/ID.oha.json.
oha_run() {
    local id="$1" url="$2" n="$3" c="$4"; shift 4
    log "oha $id: -n $n -c $c $url"
    "$OHA" -n "$n" -c "$c" --no-tui --output-format json -m POST "${HDR[@]}" "$@" \
        "$url" >"$OUT/$id.oha.json"
}

# A sample request's cache status (x-prefixcache-status), for the notes.
sample_status() { # sample_status URL BODYFILE [curl args...]
    local url="$1" body="$2"; shift 2
    curl -sS -o /dev/null -D - "${HDR[@]}" --data-binary "@$body" "$@" "$url" |
        tr -d '\r' | awk -F': ' 'tolower($1)=="x-prefixcache-status"{print $2}'
}

metrics() { curl -sS "$1/metrics" >"$OUT/$2.metrics"; }

# The ~1.5 KB chat request of scenarios 1 and 2 (non-streamed).
python3 - "$OUT/chat.json" <<'EOF'
import json, sys
system = ("You are a support assistant for Acme Corp. Answer in at most three sentences, "
          "cite the policy section you rely on, and never promise refunds that the policy "
          "does not allow. Escalate to a human when the customer mentions legal action. "
          "Reply in the language of the customer. ") * 5
body = {"model": "gpt-4o-mini", "temperature": 0,
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": "How long do I have to return a damaged item?"}]}
open(sys.argv[1], "w").write(json.dumps(body))
EOF

# --- build and prerequisites -------------------------------------------------------------
if [[ $BUILD == 1 ]]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -p prefixcache &&
        cargo build --release -p prefixcache-mock --example bench_client) >&2
fi
[[ -x "$BIN" ]] || { echo "missing $BIN (run without --no-build)" >&2; exit 1; }
[[ -x "$CLIENT" ]] || { echo "missing $CLIENT (run without --no-build)" >&2; exit 1; }
# Run copies: a build by someone else in the shared target/ must not swap the binary
# between two scenarios.
mkdir -p "$WORK/bin"
cp "$BIN" "$CLIENT" "$WORK/bin/"
BIN="$WORK/bin/prefixcache"
CLIENT="$WORK/bin/bench_client"
if ! [[ -x "$OHA" ]]; then
    echo "oha not found: install it with 'cargo install oha --locked' (or set OHA=path)" >&2
    exit 1
fi

{
    echo "date	$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit	$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "cpu	$(lscpu | awk -F: '/^Model name/{gsub(/^ +/,"",$2); print $2; exit}')"
    echo "cpus	$(nproc)"
    echo "oha	$("$OHA" --version 2>/dev/null | head -1)"
    echo "mode	$([[ $QUICK == 1 ]] && echo quick || echo full)"
    echo "load_before	$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "busy_before	$(ps -eo comm= | grep -cE '^(rustc|cargo|cc1|ld)$' || true)"
} >"$OUT/machine.tsv"
: >"$OUT/notes.tsv"
log "results in $OUT"

# The mock every scenario but the article's uses: 0 ms, no pacing.
start_mock mock
MOCK0="$MOCK_URL"
# The same mock answering after a fixed 20 ms: the miss-path scenarios (2, 6).
if want miss || want peers; then
    start_mock mock-20ms --latency "$MISS_LATENCY"
    MOCK20="$MOCK_URL"
fi
CHAT=/v1/chat/completions

# --- 1. hit path vs the machine's limit ---------------------------------------------------
if want hit; then
    # The bare baseline: the mock answering the same body directly at 0 ms.
    curl -sS -o /dev/null "${HDR[@]}" --data-binary "@$OUT/chat.json" "$MOCK0$CHAT"
    oha_run s1-bare "$MOCK0$CHAT" "$HIT_N" "$CONC" -D "$OUT/chat.json"
    for store in memory disk; do
        start_proxy "proxy-$store" "$MOCK0" "$store"
        # Warm: the first request stores the entry; the sample after it must be a hit.
        sample_status "$PROXY_URL$CHAT" "$OUT/chat.json" >/dev/null
        sleep 0.3
        note "s1-$store" "sample status after warm-up: $(sample_status "$PROXY_URL$CHAT" "$OUT/chat.json")"
        metrics "$PROXY_URL" "s1-$store.before"
        oha_run "s1-$store" "$PROXY_URL$CHAT" "$HIT_N" "$CONC" -D "$OUT/chat.json"
        metrics "$PROXY_URL" "s1-$store.after"
        stop "$PROXY_PID"
    done
fi

# --- 2. miss path overhead ------------------------------------------------------------------
if want miss; then
    nc=(-H 'cache-control: no-cache')
    # A fixed upstream latency of 20 ms.
    start_proxy proxy-miss-20ms "$MOCK20" memory
    note s2 "sample status with Cache-Control: no-cache: $(sample_status "$PROXY_URL$CHAT" "$OUT/chat.json" "${nc[@]}")"
    oha_run s2-direct-20ms-c50 "$MOCK20$CHAT" "$MISS_N" "$CONC" -D "$OUT/chat.json"
    oha_run s2-proxy-20ms-c50 "$PROXY_URL$CHAT" "$MISS_N" "$CONC" -D "$OUT/chat.json" "${nc[@]}"
    oha_run s2-direct-20ms-c1 "$MOCK20$CHAT" "$MISS_SEQ_N" 1 -D "$OUT/chat.json"
    oha_run s2-proxy-20ms-c1 "$PROXY_URL$CHAT" "$MISS_SEQ_N" 1 -D "$OUT/chat.json" "${nc[@]}"
    stop "$PROXY_PID"
    # Throughput of the miss path at 0 ms upstream latency against the upstream's own.
    start_proxy proxy-miss-0ms "$MOCK0" memory
    sample_status "$PROXY_URL$CHAT" "$OUT/chat.json" "${nc[@]}" >/dev/null
    oha_run s2-direct-0ms-c50 "$MOCK0$CHAT" "$HIT_N" "$CONC" -D "$OUT/chat.json"
    metrics "$PROXY_URL" s2-proxy-0ms-c50.before
    oha_run s2-proxy-0ms-c50 "$PROXY_URL$CHAT" "$HIT_N" "$CONC" -D "$OUT/chat.json" "${nc[@]}"
    metrics "$PROXY_URL" s2-proxy-0ms-c50.after
    stop "$PROXY_PID"
fi

# --- 3. streaming: time to first byte ---------------------------------------------------------
if want stream; then
    start_proxy proxy-stream "$MOCK0" memory
    for mode in miss hit; do
        log "bench_client ttfb --mode $mode ($STREAM_N requests per target, alternating)"
        "$CLIENT" ttfb --target "direct=$MOCK0" --target "proxy=$PROXY_URL" --mode "$mode" \
            --requests "$STREAM_N" --chunk-delay 1ms >"$OUT/s3-$mode.client.json"
    done
    stop "$PROXY_PID"
fi

# --- 4. Redis hit -------------------------------------------------------------------------------
if want redis; then
    if [[ -z "$REDIS_SERVER" || -z "$REDIS_BENCHMARK" ]]; then
        note s4 "skipped: redis-server/redis-benchmark not found (apt-get install redis-server)"
    else
        start_redis
        if start_proxy proxy-redis "$MOCK0" redis --redis-url "redis://127.0.0.1:$REDIS_PORT"; then
            sample_status "$PROXY_URL$CHAT" "$OUT/chat.json" >/dev/null
            sleep 0.3
            note s4 "sample status after warm-up: $(sample_status "$PROXY_URL$CHAT" "$OUT/chat.json")"
            # The stored value's size, for redis-benchmark -d.
            key="$(redis-cli -p "$REDIS_PORT" --scan --pattern '*' | grep -v secret | head -1)"
            size="$(redis-cli -p "$REDIS_PORT" strlen "$key" 2>/dev/null || echo 0)"
            [[ "$size" =~ ^[0-9]+$ && "$size" -gt 0 ]] || size=1024
            echo "$size" >"$OUT/s4-entry-bytes"
            note s4 "entry key $key, $size bytes"
            metrics "$PROXY_URL" s4-redis.before
            redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
            oha_run s4-redis "$PROXY_URL$CHAT" "$HIT_N" "$CONC" -D "$OUT/chat.json"
            redis-cli -p "$REDIS_PORT" info commandstats >"$OUT/s4-redis.commandstats"
            metrics "$PROXY_URL" s4-redis.after
            stop "$PROXY_PID"
            # The same with the memory tier's freshness bound at 0: every hit is a GET.
            if PREFIXCACHE_STORE_MEMORY_TTL=0 start_proxy proxy-redis-notier "$MOCK0" redis \
                --redis-url "redis://127.0.0.1:$REDIS_PORT"; then
                note s4 "memory_ttl=0 sample status: $(sample_status "$PROXY_URL$CHAT" "$OUT/chat.json")"
                metrics "$PROXY_URL" s4-redis-notier.before
                redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
                oha_run s4-redis-notier "$PROXY_URL$CHAT" "$HIT_N" "$CONC" -D "$OUT/chat.json"
                redis-cli -p "$REDIS_PORT" info commandstats >"$OUT/s4-redis-notier.commandstats"
                metrics "$PROXY_URL" s4-redis-notier.after
                stop "$PROXY_PID"
            fi
            log "redis-benchmark -t get -d $size -c $CONC -n $HIT_N"
            "$REDIS_BENCHMARK" -p "$REDIS_PORT" -t get -d "$size" -c "$CONC" -n "$HIT_N" --csv \
                >"$OUT/s4-redis-benchmark.csv"
        else
            note s4 "skipped: the proxy did not start with --store redis ($(grep -m1 -iE 'error|not available' "$OUT/proxy-redis.log" | cut -c1-160))"
        fi
        stop "$REDIS_PID"
    fi
fi

# --- 5. the article's before/after ----------------------------------------------------------------
if want article; then
    start_mock mock-article --latency "$ARTICLE_LATENCY" --seed 1
    log "article before: $ARTICLE_N requests, concurrency $CONC, direct, latency $ARTICLE_LATENCY"
    "$CLIENT" mix --url "$MOCK_URL" --requests "$ARTICLE_N" --concurrency "$CONC" \
        >"$OUT/s5-before.client.json"
    # A fresh provider-cache simulation for the second run, so both start cold.
    curl -sS -X POST "$MOCK_URL/mock/reset" >/dev/null
    start_proxy proxy-article "$MOCK_URL" disk
    log "article after: the same requests through prefixcache (disk store, defaults)"
    "$CLIENT" mix --url "$PROXY_URL" --requests "$ARTICLE_N" --concurrency "$CONC" \
        >"$OUT/s5-after.client.json"
    curl -sS "$MOCK_URL/mock/stats" >"$OUT/s5-mock-stats.json"
    stop "$PROXY_PID"
    stop "$MOCK_PID"
    note s5 "mock latency $ARTICLE_LATENCY; $ARTICLE_N requests at concurrency $CONC"
fi

# --- memory -------------------------------------------------------------------------------------------
if want memory; then
    start_proxy proxy-memory "$MOCK0" memory
    # Idle, with the tokenizer tables loaded (serve preloads them), after one request.
    sample_status "$PROXY_URL$CHAT" "$OUT/chat.json" >/dev/null
    sleep 2
    awk '/^VmRSS/{print $2}' "/proc/$PROXY_PID/status" >"$OUT/mem-idle-kib"
    log "filling the 256 MiB memory tier: $FILL_N embedding requests (~1.2 MB answers)"
    "$CLIENT" fill --url "$PROXY_URL" --pid "$PROXY_PID" --requests "$FILL_N" \
        --concurrency 16 --inputs 32 >"$OUT/mem-fill.client.json"
    curl -sS "$PROXY_URL/metrics" | grep -E '^prefixcache_(store_bytes|entries)' >"$OUT/mem-store.metrics" || true
    stop "$PROXY_PID"
fi

# --- 6. peers: LiteLLM ----------------------------------------------------------------------------------
if want peers; then
    VENV="$ROOT/bench/.venv-litellm"
    if ! [[ -x "$VENV/bin/litellm" ]]; then
        log "installing litellm[proxy]==$LITELLM_VERSION into $VENV"
        if ! { "$PYTHON" -m venv "$VENV" && "$VENV/bin/pip" install -q \
            "litellm[proxy]==$LITELLM_VERSION"; } >"$OUT/litellm-install.log" 2>&1; then
            note s6 "skipped: pip could not install litellm[proxy]==$LITELLM_VERSION (see litellm-install.log): $(tail -1 "$OUT/litellm-install.log" | cut -c1-200)"
        fi
    fi
    if [[ -x "$VENV/bin/litellm" && -n "$REDIS_SERVER" ]]; then
        start_redis
        port="$(free_port)"
        # Two routes to the same mock model: at 0 ms and at 20 ms.
        cat >"$WORK/litellm.yaml" <<EOF
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: $MOCK0/v1
      api_key: sk-bench
  - model_name: bench-20ms
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: $MOCK20/v1
      api_key: sk-bench
litellm_settings:
  cache: true
  cache_params:
    type: redis
    host: 127.0.0.1
    port: $REDIS_PORT
general_settings:
  # No master key: like prefixcache, it passes callers' keys through. LiteLLM 1.108
  # refuses to start without a master key unless told this is deliberate.
  dangerously_permit_weak_or_unset_master_key: true
EOF
        cp "$WORK/litellm.yaml" "$OUT/litellm.yaml"
        # LiteLLM prints no reliable ready line at LITELLM_LOG=ERROR: poll its liveness route.
        env -u OPENAI_API_KEY LITELLM_LOG=ERROR "$VENV/bin/litellm" --config "$WORK/litellm.yaml" \
            --host 127.0.0.1 --port "$port" --num_workers 2 >"$OUT/litellm.log" 2>&1 &
        LITELLM_PID=$!
        PIDS+=("$LITELLM_PID")
        LITELLM_URL="http://127.0.0.1:$port"
        ready=0
        for _ in $(seq 240); do
            if curl -sf -o /dev/null "$LITELLM_URL/health/liveliness"; then ready=1; break; fi
            kill -0 "$LITELLM_PID" 2>/dev/null || break
            sleep 0.5
        done
        if [[ $ready == 1 ]]; then
            curl -sS -o /dev/null "${HDR[@]}" --data-binary "@$OUT/chat.json" "$LITELLM_URL$CHAT"
            sleep 1
            oha_run s6-litellm-hit "$LITELLM_URL$CHAT" "$PEER_HIT_N" "$CONC" -D "$OUT/chat.json"
            # No cache: LiteLLM's per-request control is a `cache` object in the body.
            python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); b["cache"]={"no-cache": True}; print(json.dumps(b)); b["model"]="bench-20ms"; open(sys.argv[2],"w").write(json.dumps(b))' \
                "$OUT/chat.json" "$OUT/chat-litellm-nocache-20ms.json" >"$OUT/chat-litellm-nocache.json"
            oha_run s6-litellm-20ms-c50 "$LITELLM_URL$CHAT" "$PEER_MISS_N" "$CONC" \
                -D "$OUT/chat-litellm-nocache-20ms.json"
            oha_run s6-litellm-0ms-c50 "$LITELLM_URL$CHAT" "$PEER_MISS_N" "$CONC" \
                -D "$OUT/chat-litellm-nocache.json"
            ps -o rss= -p "$LITELLM_PID" --ppid "$LITELLM_PID" | awk '{s+=$1} END {print s}' \
                >"$OUT/s6-litellm-rss-kib" || true
        else
            note s6 "skipped: litellm did not answer /health/liveliness within 120 s (see litellm.log)"
        fi
        stop "$LITELLM_PID"
        stop "$REDIS_PID"
    fi
fi

echo "load_after	$(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.tsv"
echo "busy_after	$(ps -eo comm= | grep -cE '^(rustc|cargo|cc1|ld)$' || true)" >>"$OUT/machine.tsv"
python3 "$ROOT/bench/report.py" "$OUT" | tee "$OUT/table.md"

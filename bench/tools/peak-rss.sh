#!/usr/bin/env bash
# Peak resident memory (VmHWM of the `prefixcache serve` process, from /proc) that four
# concurrent request bodies of SIZE bytes add, in MiB, for one body SHAPE:
#   pad       {"model":..,"messages":[{"role":"user","content":"hi"}],"pad":[0,0,...]}
#   messages  {"model":..,"messages":[{"role":"user","content":[0,0,...]}]}
#
#   bench/tools/peak-rss.sh pad            # SIZE defaults to 33554432 (max_body_bytes)
#   BIN=/path/to/prefixcache bench/tools/peak-rss.sh messages
#
# The upstream is bench/tools/sink.py, which reads each body and answers a small
# completion, so only the proxy's memory is measured. Prints: shape, MiB before, MiB after, growth.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SHAPE=${1:?usage: peak-rss.sh pad|messages}
SIZE=${SIZE:-33554432}
B=${BIN:-$ROOT/target/release/prefixcache}
PY=${PYTHON:-$ROOT/.venv/bin/python}
D=$(mktemp -d)
trap 'kill $SINK $PROXY 2>/dev/null || true; rm -rf "$D"' EXIT

"$PY" - "$SHAPE" "$SIZE" "$D/body.json" <<'EOF'
import sys
shape, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if shape == "pad":
    head, close = b'{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hi"}],"pad":[0', b"]}"
else:
    head, close = b'{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":[0', b"]}]}"
n = (size - len(head) - len(close)) // 2
body = head + b",0" * n + close
body = body[: -len(close)] + b" " * (size - len(body)) + close
assert len(body) == size
open(out, "wb").write(body)
EOF

"$PY" "$ROOT/bench/tools/sink.py" > "$D/sink.out" & SINK=$!
for _ in $(seq 1 50); do grep -q listening "$D/sink.out" && break; sleep 0.1; done
UP=$(grep -o 'http://[0-9.:]*' "$D/sink.out")
PREFIXCACHE_CONFIG=/dev/null RUST_LOG=warn "$B" serve --listen 127.0.0.1:0 --upstream "$UP" \
  --store memory --data-dir "$D/data" > "$D/p.out" 2> "$D/p.err" & PROXY=$!
for _ in $(seq 1 300); do grep -q "prefixcache listening" "$D/p.out" 2>/dev/null && break; sleep 0.2; done
P=$(grep -o 'http://[0-9.:]*' "$D/p.out" | tail -1)
hwm() { awk '/VmHWM/ {print int($2 / 1024)}' /proc/$PROXY/status; }
curl -s -o /dev/null -H 'authorization: Bearer sk-warm' -H 'content-type: application/json' \
  -d '{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"warm up"}]}' \
  "$P/v1/chat/completions"
BEFORE=$(hwm)
CURLS=()
for i in 1 2 3 4; do
  curl -s -o "$D/r$i" -w '%{http_code}\n' -H "authorization: Bearer sk-$i" \
    -H 'content-type: application/json' --data-binary @"$D/body.json" \
    "$P/v1/chat/completions" > "$D/s$i" & CURLS+=($!)
done
wait "${CURLS[@]}"
for i in 1 2 3 4; do grep -q 200 "$D/s$i" || { echo "request $i: $(cat "$D/s$i") $(cat "$D/r$i")" >&2; exit 1; }; done
AFTER=$(hwm)
echo "$SHAPE before=${BEFORE}MiB after=${AFTER}MiB grew=$((AFTER - BEFORE))MiB bodies=$((4 * SIZE / 1048576))MiB"

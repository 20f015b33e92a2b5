#!/usr/bin/env bash
# How long large request bodies hold the proxy's async workers: a probe sends GET
# /healthz back to back on one kept-alive connection while other connections post
# large chat requests (one user message of SIZE bytes of prose) to a cached route;
# prints the probe's latency (p50, p99, max) without and with that load. A worker busy
# with a body cannot poll its other connections (nor, if it holds it, the I/O driver),
# so the probe's maximum shows the longest stall.
#
#   bench/tools/worker-stall.sh            # SIZE 16 MiB, 3 senders, 40 bodies each
#   BIN=/path/to/prefixcache SIZE=33000000 bench/tools/worker-stall.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIZE=${SIZE:-16777216}
SENDERS=${SENDERS:-3}
BODIES=${BODIES:-40}
B=${BIN:-$ROOT/target/release/prefixcache}
PY=${PYTHON:-$ROOT/.venv/bin/python}
D=$(mktemp -d)
trap 'kill $SINK $PROXY 2>/dev/null || true; rm -rf "$D"' EXIT

"$PY" "$ROOT/bench/tools/sink.py" > "$D/sink.out" & SINK=$!
for _ in $(seq 1 50); do grep -q listening "$D/sink.out" && break; sleep 0.1; done
UP=$(grep -o 'http://[0-9.:]*' "$D/sink.out")
PREFIXCACHE_CONFIG=/dev/null RUST_LOG=warn "$B" serve --listen 127.0.0.1:0 --upstream "$UP" \
  --store memory --data-dir "$D/data" > "$D/p.out" 2> "$D/p.err" & PROXY=$!
for _ in $(seq 1 300); do grep -q "prefixcache listening" "$D/p.out" 2>/dev/null && break; sleep 0.2; done
P=$(grep -o 'http://[0-9.:]*' "$D/p.out" | tail -1)

"$PY" - "$P" "$SIZE" "$SENDERS" "$BODIES" <<'EOF'
import http.client, json, sys, threading, time, urllib.parse
url, size, senders, bodies = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
host = urllib.parse.urlparse(url).netloc
words = "the parties agree that the supplier shall deliver the goods described herein "
def body(i):
    text = (f"document {i}: " + words * (size // len(words) + 1))[: size - 200]
    return json.dumps({"model": "gpt-4o-mini", "temperature": 0,
        "messages": [{"role": "system", "content": "Summarize."},
                     {"role": "user", "content": text}]}).encode()

def probe(stop, out):
    c = http.client.HTTPConnection(host)
    while not stop.is_set():
        t = time.perf_counter()
        c.request("GET", "/healthz")
        c.getresponse().read()
        out.append((time.perf_counter() - t) * 1000)

def send(k, done):
    c = http.client.HTTPConnection(host, timeout=600)
    for j in range(bodies):
        b = body(k * 1000 + j)  # every body differs: all are misses, all analysed
        c.request("POST", "/v1/chat/completions", b,
                  {"content-type": "application/json", "authorization": f"Bearer sk-{k}"})
        r = c.getresponse(); r.read()
        assert r.status == 200, r.status
        done.append(1)

def stats(name, xs):
    xs = sorted(xs)
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]
    print(f"{name}: probes={len(xs)} p50={q(0.5):.2f}ms p99={q(0.99):.2f}ms max={xs[-1]:.2f}ms")

idle = []; stop = threading.Event()
t = threading.Thread(target=probe, args=(stop, idle)); t.start(); time.sleep(3); stop.set(); t.join()
stats("idle", idle)
loaded = []; stop = threading.Event(); done = []
t = threading.Thread(target=probe, args=(stop, loaded)); t.start()
ss = [threading.Thread(target=send, args=(k, done)) for k in range(senders)]
started = time.perf_counter()
for s in ss: s.start()
for s in ss: s.join()
stop.set(); t.join()
print(f"{len(done)} bodies of {size} bytes in {time.perf_counter() - started:.1f}s")
stats("loaded", loaded)
EOF

#!/usr/bin/env bash
# Instructions the proxy executes per request, by callgrind (repeatable on a busy
# machine). Prints the total of one run; per request = (run with N - run with 0) / N:
#   a=$(bench/tools/instructions-per-request.sh hit 0)
#   b=$(bench/tools/instructions-per-request.sh hit 2000); echo $(( (b - a) / 2000 ))
# MODE: hit | miss (Cache-Control: no-cache). BIN=path selects another binary, BODY=path
# another request body. Needs a release build, valgrind, and a bench/out/*/chat.json
# from bench/run.sh (or BODY). Requests go through oha (-c 10); without oha, one at a
# time through curl (counts then differ a little from oha's: compare like with like).
set -e
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODE=$1; N=$2; D=$(mktemp -d); B=${BIN:-$ROOT/target/release/prefixcache}; OHA=${OHA:-$(command -v oha || echo ~/.cargo/bin/oha)}
BODY=${BODY:-$(ls "$ROOT"/bench/out/*/chat.json | head -1)}
$B mock-upstream --listen 127.0.0.1:0 > $D/mock.out 2>&1 & MPID=$!
for i in $(seq 1 50); do grep -q listening $D/mock.out && break; sleep 0.2; done
MOCK=$(grep -o 'http://[0-9.:]*' $D/mock.out)
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file=$D/cg.out $B serve --listen 127.0.0.1:0 --upstream $MOCK --store memory --data-dir $D/d > $D/p.out 2>$D/p.err & VPID=$!
for i in $(seq 1 300); do grep -q listening $D/p.out 2>/dev/null && break; sleep 0.5; done
P=$(grep -o 'http://[0-9.:]*' $D/p.out)
H=(-H 'Authorization: Bearer sk-bench' -H 'Content-Type: application/json')
[ "$MODE" = miss ] && H+=(-H 'Cache-Control: no-cache')
curl -s -o /dev/null "${H[@]}" --data-binary @$BODY $P/v1/chat/completions
if [ "$N" -gt 0 ] && [ -x "$OHA" ]; then
  $OHA -n $N -c 10 --no-tui -m POST "${H[@]}" -D $BODY $P/v1/chat/completions > /dev/null 2>&1
elif [ "$N" -gt 0 ]; then
  for _ in $(seq 1 $N); do curl -s -o /dev/null "${H[@]}" --data-binary @$BODY $P/v1/chat/completions; done
fi
kill -TERM $VPID; wait $VPID 2>/dev/null || true; kill $MPID
callgrind_annotate $D/cg.out 2>/dev/null | grep "PROGRAM TOTALS" | tr -d ',' | awk '{print $1}'
rm -rf $D

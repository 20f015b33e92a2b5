#!/usr/bin/env bash
# Instructions (callgrind: repeatable on a busy machine) one request pays for its key
# before the store lookup: the serde_json parse the proxy does anyway, plus the key
# (canonical form + hashes), for the key bench's bodies. Per body: (I(N) - I(0)) / N.
#
#   bench/tools/key-instructions.sh REV     # REV: a commit, e.g. HEAD or 0ccdef1
#
# It builds a small release harness in a temporary directory against REV's
# crates/core (`git archive`), so any two commits compare on the same bodies. Commits
# before the raw-bytes canonical form (no crates/core/src/canonical.rs) key the parsed
# map; later ones canonicalize the raw bytes. Bodies are written in SDK member order
# (role before content), as clients send them. Needs valgrind.
set -euo pipefail
REV=${1:?usage: key-instructions.sh REV}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
mkdir -p "$D/src" "$D/h/src"
git -C "$ROOT" archive "$REV" Cargo.toml Cargo.lock crates/core crates/testkit | tar -x -C "$D/src"
cp "$D/src/Cargo.lock" "$D/h/Cargo.lock"
cat > "$D/h/Cargo.toml" <<EOF
[package]
name = "key-instructions"
version = "0.0.0"
edition = "2024"
[workspace]
[dependencies]
prefixcache-core = { path = "$D/src/crates/core" }
serde_json = { version = "1", features = ["float_roundtrip"] }
[profile.release]
lto = "thin"
codegen-units = 4
debug = "line-tables-only"
EOF
if [ -f "$D/src/crates/core/src/canonical.rs" ]; then
  KEY='let c = prefixcache_core::canonical::canonicalize(Route::ChatCompletions, raw, false).unwrap();
        std::hint::black_box(&m);
        let k = compute_keys(&KeyInput { namespace: &ns, strategy: "default", method: "POST",
            route: Route::ChatCompletions, query: "", body: &c, key_mode: KeyMode::Exact,
            family: Some(&fam) }).unwrap();'
else
  KEY='let k = compute_keys(&KeyInput { namespace: &ns, strategy: "default",
            route: Route::ChatCompletions, body: &m, key_mode: KeyMode::Exact,
            family: Some(&fam), normalize_whitespace: false }).unwrap();'
fi
cat > "$D/h/src/main.rs" <<EOF
use prefixcache_core::config::KeyMode;
use prefixcache_core::key::*;
use prefixcache_core::route::Route;
use serde_json::Value;
const SYSTEM: &str = "You are a document analyzer for Acme Corp. Read the document the user \\
    provides, identify its type (contract, invoice, report or letter), extract the parties, \\
    dates and amounts, and answer in JSON with the keys type, parties, dates and amounts. \\
    Never invent values that are not in the document.";
const PARAGRAPH: &str = "The parties agree that the supplier shall deliver the goods described \\
    in Schedule A no later than thirty (30) days after the purchase order date, and that \\
    title passes on delivery. Invoices are payable within 45 days; late payments accrue \\
    interest at 1.5% per month.\n\n";
fn envelope(messages: &[(&str, String)]) -> Vec<u8> {
    let mut s = String::from(r#"{"model":"gpt-4o","messages":["#);
    for (i, (role, content)) in messages.iter().enumerate() {
        if i > 0 { s.push(','); }
        let content = serde_json::to_string(content).unwrap();
        s.push_str(&format!(r#"{{"role":"{role}","content":{content}}}"#));
    }
    s.push_str(r#"],"temperature":0.7,"max_tokens":512,"stream":false,"user":"bench","tools":[{"type":"function","function":{"name":"lookup_party","description":"Look up a company by name","parameters":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}}}]}"#);
    s.into_bytes()
}
fn document(size: usize) -> Vec<u8> {
    let mut doc = String::new();
    while doc.len() + PARAGRAPH.len() < size.saturating_sub(SYSTEM.len() + 420) { doc.push_str(PARAGRAPH); }
    envelope(&[("system", SYSTEM.to_string()), ("user", format!("Document:\n{doc}"))])
}
fn conversation(size: usize) -> Vec<u8> {
    let mut messages = vec![("system", SYSTEM.to_string())];
    let (mut len, mut turn) = (SYSTEM.len() + 420, 0usize);
    while len < size.saturating_sub(120) {
        let (role, content) = if turn % 2 == 0 {
            ("user", format!("Question {turn}: what does clause {turn} say about late payment?"))
        } else { ("assistant", format!("Clause {turn} says invoices are payable within 45 days.")) };
        len += content.len() + 34;
        messages.push((role, content));
        turn += 1;
    }
    envelope(&messages)
}
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args[2].parse().unwrap();
    let raw = if args[1] == "document" { document(size) } else { conversation(size) };
    let n: usize = args[3].parse().unwrap();
    let ns = Namespace::for_credential(&TenantSecret::from_text("bench secret"), &[b"Bearer sk-x"]);
    let fam = FamilyId([7; 32]);
    let mut acc = 0u8;
    for _ in 0..n {
        let raw = std::hint::black_box(&raw[..]);
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(raw) else { panic!() };
        $KEY
        acc ^= k.key.0[0];
    }
    println!("{acc}");
}
EOF
(cd "$D/h" && CARGO_TARGET_DIR="$D/target" cargo build --release -q)
BIN="$D/target/release/key-instructions"
ins() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" "$3" 2>&1 >/dev/null \
  | grep -o "Collected : [0-9]*" | grep -o "[0-9]*"; }
echo "rev $(git -C "$ROOT" rev-parse --short "$REV"): instructions per request (parse + key)"
for shape in document conversation; do
  for size in 1024 10240 102400; do
    n=10
    a=$(ins $shape $size 0); b=$(ins $shape $size $n)
    echo "$shape $size $(( (b - a) / n ))"
  done
done

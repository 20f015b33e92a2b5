#!/usr/bin/env python3
"""Token ids of the parity corpus, from the Python `tiktoken` package.

Reads corpus.jsonl ({"name", "text"} per line) and writes one line per case:
{"name": ..., "o200k_base": [ids], "cl100k_base": [ids]}, encoded with
`encode_ordinary` (prompts are ordinary text). Also checks that o200k_harmony encodes
every case exactly as o200k_base, as the Rust side assumes.

Usage: reference.py [--corpus FILE] [--out FILE|-]
Defaults: the committed fixture paths. TIKTOKEN_CACHE_DIR must point at a cache built by
make_cache.py (it is built into target/tiktoken-cache when unset), since tiktoken cannot
download its vocabularies here.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKSPACE = HERE.parents[1]
FIXTURES = WORKSPACE / "crates/core/tests/fixtures/tokenizer"
ENCODINGS = ("o200k_base", "cl100k_base")


def ensure_cache() -> None:
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        out = subprocess.run(
            [sys.executable, str(HERE / "make_cache.py")], capture_output=True, text=True, check=True
        ).stdout.strip()
        os.environ["TIKTOKEN_CACHE_DIR"] = out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=FIXTURES / "corpus.jsonl")
    ap.add_argument("--out", default=str(FIXTURES / "reference.jsonl"))
    args = ap.parse_args()
    ensure_cache()
    import tiktoken  # after TIKTOKEN_CACHE_DIR is set

    encs = {name: tiktoken.get_encoding(name) for name in ENCODINGS}
    harmony = tiktoken.get_encoding("o200k_harmony")
    lines = []
    with args.corpus.open(encoding="utf-8") as f:
        for line in f:
            case = json.loads(line)
            row = {"name": case["name"]}
            for name, enc in encs.items():
                row[name] = enc.encode_ordinary(case["text"])
            if harmony.encode_ordinary(case["text"]) != row["o200k_base"]:
                sys.exit(f"reference.py: o200k_harmony differs from o200k_base on {case['name']}")
            lines.append(json.dumps(row, separators=(",", ":")) + "\n")
    if args.out == "-":
        sys.stdout.writelines(lines)
    else:
        with open(args.out, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(lines)
        print(f"{args.out}: {len(lines)} cases (tiktoken {tiktoken.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()

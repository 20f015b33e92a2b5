#!/usr/bin/env python3
"""Python tiktoken throughput on the text the Rust tokenizer bench uses.

The corpus texts (not the 100k repeats) joined by newlines, repeated to 1 MiB and cut
at a character boundary, exactly as crates/core/benches/tokenizer.rs builds it; then
encode_ordinary, single-threaded, best and median of 10 runs, in MiB/s. Pathological
1 MiB inputs follow, the whitespace run last.

Usage: bench.py   (TIKTOKEN_CACHE_DIR is built with make_cache.py when unset)
"""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[1] / "crates/core/tests/fixtures/tokenizer/corpus.jsonl"
MIB = 1 << 20
RUNS = 10


def mixed_text() -> str:
    texts = []
    with CORPUS.open(encoding="utf-8") as f:
        for line in f:
            case = json.loads(line)
            if not case["name"].startswith("repeat-100k/"):
                texts.append(case["text"])
    unit = "\n".join(texts)
    s = ""
    while len(s.encode()) < MIB:
        s += unit + "\n"
    return s.encode()[:MIB].decode("utf-8", errors="ignore")


def no_spaces() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    x = 0x9E3779B97F4A7C15
    out = []
    mask = (1 << 64) - 1
    for _ in range(MIB):
        x ^= (x << 13) & mask
        x ^= x >> 7
        x ^= (x << 17) & mask
        out.append(alphabet[x % 64])
    return "".join(out)


def measure(enc, text: str, runs: int) -> tuple[float, float, int]:
    n = len(enc.encode_ordinary(text))  # warm-up
    size = len(text.encode()) / MIB
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        enc.encode_ordinary(text)
        times.append(time.perf_counter() - t)
    return size / min(times), size / statistics.median(times), n


def main() -> None:
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        out = subprocess.run([sys.executable, str(HERE / "make_cache.py")], capture_output=True, text=True, check=True)
        os.environ["TIKTOKEN_CACHE_DIR"] = out.stdout.strip()
    import tiktoken

    text = mixed_text()
    print(f"tiktoken {tiktoken.__version__}; mixed text: {len(text.encode())} bytes; best / median of {RUNS} runs, MiB/s")
    for name in ("o200k_base", "cl100k_base"):
        best, median, n = measure(tiktoken.get_encoding(name), text, RUNS)
        print(f"{name}: {n} tokens; tiktoken {best:.1f} / {median:.1f}")
    print("pathological 1 MiB inputs (best of 3, MiB/s):", flush=True)
    for case, text in (("one-char-a", "a" * MIB), ("no-spaces", no_spaces()), ("whitespace-run", " " * MIB)):
        for name in ("o200k_base", "cl100k_base"):
            try:
                best, _, _ = measure(tiktoken.get_encoding(name), text, 3)
                print(f"  {case} {name}: tiktoken {best:.2f}", flush=True)
            except BaseException as e:  # a Rust panic inside tiktoken surfaces as PanicException
                print(f"  {case} {name}: tiktoken failed: {type(e).__name__}: {e}", flush=True)


if __name__ == "__main__":
    main()

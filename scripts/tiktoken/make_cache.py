#!/usr/bin/env python3
"""Build a TIKTOKEN_CACHE_DIR from the vocabularies the Rust crate `bpe-openai` embeds.

The Python `tiktoken` package downloads its vocabulary files on first use, which this
network does not allow. It also looks in $TIKTOKEN_CACHE_DIR for a file named by the
SHA-1 of the download URL, and checks its SHA-256 against the hash it publishes. This
script writes exactly those files from `bpe-openai`'s `data/*.tiktoken.gz`, after checking
the same SHA-256 itself, so Python and Rust tokenize with byte-identical vocabularies.

Usage: make_cache.py [--out DIR] [--data DIR]
  --out   cache directory to fill (default: <workspace>/target/tiktoken-cache)
  --data  bpe-openai's data directory (default: found with `cargo metadata`, else in
          $CARGO_HOME/registry/src/*/bpe-openai-*/data)
Prints the cache directory on stdout; exits 1 if a file is missing or its hash is wrong.
"""

import argparse
import glob
import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

WORKSPACE = Path(__file__).resolve().parents[2]

# tiktoken_ext/openai_public.py (tiktoken 0.14): URL and expected SHA-256 of each file.
# o200k_harmony reads the o200k_base file.
VOCABULARIES = {
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
}


def find_data_dir() -> Path:
    try:
        out = subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--offline"],
            cwd=WORKSPACE,
            capture_output=True,
            check=True,
        ).stdout
        for pkg in json.loads(out)["packages"]:
            if pkg["name"] == "bpe-openai":
                return Path(pkg["manifest_path"]).parent / "data"
    except (OSError, subprocess.CalledProcessError, KeyError, ValueError):
        pass
    cargo_home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    found = sorted(glob.glob(os.path.join(cargo_home, "registry/src/*/bpe-openai-*/data")))
    if not found:
        sys.exit("make_cache.py: bpe-openai's data directory not found; pass --data DIR")
    return Path(found[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=WORKSPACE / "target" / "tiktoken-cache")
    ap.add_argument("--data", type=Path)
    args = ap.parse_args()
    data = args.data or find_data_dir()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (url, sha256) in VOCABULARIES.items():
        src = data / f"{name}.tiktoken.gz"
        try:
            contents = gzip.decompress(src.read_bytes())
        except OSError as e:
            sys.exit(f"make_cache.py: cannot read {src}: {e}")
        actual = hashlib.sha256(contents).hexdigest()
        if actual != sha256:
            sys.exit(f"make_cache.py: {src} has SHA-256 {actual}, tiktoken publishes {sha256}")
        dest = args.out / hashlib.sha1(url.encode()).hexdigest()
        tmp = dest.with_suffix(".tmp")
        tmp.write_bytes(contents)
        os.replace(tmp, dest)  # atomic: tests may build the cache concurrently
    print(args.out)


if __name__ == "__main__":
    main()

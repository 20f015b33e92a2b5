#!/usr/bin/env python3
"""Write the tokenizer parity corpus: crates/core/tests/fixtures/tokenizer/corpus.jsonl.

One JSON object per line, {"name": ..., "text": ...}. Deterministic (fixed seeds), so
running it again gives the same file; reference.py turns it into token ids with the
Python `tiktoken` package. The cases cover what moves token boundaries or has broken
tokenizers before: prose, code, JSON, many scripts, emoji ZWJ sequences, CRLF and long
whitespace runs, numbers, contractions, 100k repeated characters, UUIDs and timestamps,
realistic system prompts, and seeded random strings over a hostile alphabet.
"""

import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

WORKSPACE = Path(__file__).resolve().parents[2]
OUT = WORKSPACE / "crates/core/tests/fixtures/tokenizer/corpus.jsonl"

cases: list[tuple[str, str]] = []


def add(name: str, text: str) -> None:
    assert name not in {n for n, _ in cases}, name
    cases.append((name, text))


# --- prose ----------------------------------------------------------------------------
add("prose/english", (
    "The quarterly report shows revenue growth of 12% year over year, driven mostly by "
    "the enterprise segment. Operating margins narrowed slightly, as the company kept "
    "hiring ahead of demand; management expects them to recover in the second half.\n\n"
    "Risks include currency swings, a slower-than-expected rollout in Europe, and the "
    "usual uncertainty around large deals that slip from one quarter into the next."
))
add("prose/dialogue", (
    "\"Where were you?\" she asked.\n\"Out,\" he said. \"Does it matter?\"\n"
    "\"It matters to me.\" She didn't look up from the letter.\u2014It's always 'out' "
    "with you\u2026"
))
add("prose/mixed-case", "HELLO World hello WORLD HeLLo wOrLd McDonald iPhone eBay NASA's JSONParser XMLHttpRequest")
add("prose/accents", "Café naïve résumé façade coöperate Zürich Ærøskøbing São Paulo Kraków Dvořák")

# --- code -----------------------------------------------------------------------------
add("code/rust", '''use std::collections::HashMap;

/// Counts words, case-insensitively.
fn count_words(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        *counts.entry(word.to_lowercase()).or_insert(0) += 1;
    }
    counts
}
''')
add("code/python", '''def fib(n: int) -> int:
    """Return the n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


if __name__ == "__main__":
\tprint([fib(i) for i in range(10)])  # tabs and spaces
''')
add("code/js-crlf", "function add(a, b) {\r\n  return a + b;\r\n}\r\n\r\nconsole.log(add(1, 2));\r\n")
add("code/shell", "#!/bin/sh\nset -eu\nfor f in ./*.txt; do\n  wc -l \"$f\" | awk '{print $1}' >> /tmp/out.log\ndone\n")
add("code/paths-urls", "See https://example.com/a/b?c=1&d=2#frag and /usr/local/bin//python3 or C:\\Windows\\System32\\drivers\\etc\\hosts")

# --- JSON -----------------------------------------------------------------------------
tool = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
add("json/tool-compact", json.dumps(tool, separators=(",", ":"), sort_keys=True))
add("json/tool-pretty", json.dumps(tool, indent=2))
add("json/escapes", json.dumps({"s": "line\nbreak \"quoted\" \\ tab\t \u00e9 \u65e5\u672c \U0001F600", "n": [1, -2.5, 3e10, None, True]}))

# --- scripts ----------------------------------------------------------------------------
add("cjk/chinese", "人工智能正在改变我们的工作方式。请总结以下文档的要点，并用中文回答。")
add("cjk/japanese", "東京は日本の首都です。カタカナとひらがな、そして漢字を混ぜた文章をトークン化します。")
add("cjk/korean", "안녕하세요. 오늘 날씨가 정말 좋네요! 한국어 문장도 토큰화해 봅시다.")
add("arabic", "مرحبا بالعالم. هذا نص عربي مع أرقام ١٢٣ و 456 وعلامات ترقيم؛ هل يعمل؟")
add("hindi", "नमस्ते दुनिया। यह एक हिंदी वाक्य है जिसमें संयुक्ताक्षर क्ष, त्र, ज्ञ हैं।")
add("russian-greek-hebrew-thai", "Привет, мир! Καλημέρα κόσμε. שלום עולם. สวัสดีชาวโลก")
add("combining-marks", "e\u0301 a\u0308 n\u0303 Z\u0351\u0361\u0336a\u0338l\u0335g\u0334o\u0337 \u1e9b\u0323 ǅungla ǈj")
add("zero-width-and-spaces", "a\u200bb\u200cc\u200dd\ufeffe\u00a0f\u2028g\u2029h\u3000i\u202fj\u2009k\u0085l")
add("math-alphanumerics", "𝐀𝐁𝐂 𝑥 + 𝑦 = 𝑧 ∑∫∂√∞ ≤≥≠ ℝℕℤ ½ ¾ ² ³")

# --- emoji ----------------------------------------------------------------------------
add("emoji/zwj", "👨\u200d👩\u200d👧\u200d👦 family, 🧑\u200d🚀 astronaut, 👩🏽\u200d💻 coder, 🏳️\u200d🌈 flag, ❤️\u200d🔥")
add("emoji/modifiers-flags-keycaps", "👍🏻👍🏼👍🏽👍🏾👍🏿 🇫🇷🇯🇵🇺🇸 1️⃣#️⃣*️⃣ ©️®️™️ 🫠🥹")
add("emoji/run", "😀" * 500)

# --- whitespace -------------------------------------------------------------------------
add("ws/crlf", "line one\r\nline two\r\n\r\nline four\r\n")
add("ws/cr-only", "a\rb\r\rc\r")
add("ws/summarize", "Summarize:\n\n\n{text}")
add("ws/trailing-spaces", "word   ")
add("ws/trailing-newlines", "word\n\n\n")
add("ws/leading", "   \n\t  leading whitespace")
add("ws/mixed-runs", "a \n \n  \n   b\t\t \t c  \r\n  d \u00a0 \u00a0 e")
for n in (1, 2, 3, 7, 16, 64, 128, 129, 255, 256, 1000, 4097):
    add(f"ws/spaces-{n}-then-word", " " * n + "word")
    add(f"ws/word-spaces-{n}-word", "word" + " " * n + "word")
for n in (1, 2, 5, 100, 1000):
    add(f"ws/newlines-{n}", "x" + "\n" * n + "y")
add("ws/tabs", "\t\t\tindent\n\t\tless\n\tleast\n")
add("ws/only-spaces", " " * 77)
add("ws/only-newlines", "\n" * 33)
add("empty", "")
add("single-space", " ")

# --- numbers and contractions -------------------------------------------------------------
add("numbers", "0 1 12 123 1234 12345 123456 1234567890 3.14159 -42 1,000,000 1e-9 0x1F 0b1010 007 +1 (555) 123-4567 $19.99 99.9%")
add("contractions", "I'm you're he's she'll we'd they've it's don't can't won't isn't I'M YOU'RE THEY'LL We'D It’s don’t 's 't 're 've 'm 'll 'd")
add("apostrophes-edge", "rock'n'roll o'clock 'quoted' ''double'' x'''y Ma'am ma'AM'S")

# --- long repeats (100k) ----------------------------------------------------------------
for name, ch in (("a", "a"), ("space", " "), ("newline", "\n"), ("digit", "7"), ("cjk", "日"), ("dot", "."), ("ab", "ab")):
    add(f"repeat-100k/{name}", ch * (100_000 // len(ch)))

# --- ids and timestamps ----------------------------------------------------------------
rng = random.Random(20261126)
start = datetime(2026, 1, 1, tzinfo=timezone.utc)
lines = []
for i in range(40):
    rid = uuid.UUID(int=rng.getrandbits(128), version=4)
    ts = start + timedelta(seconds=rng.randrange(0, 365 * 86400), microseconds=rng.randrange(10**6))
    lines.append(f"[{ts.isoformat()}] request_id={rid} user=u_{rng.getrandbits(32):08x} latency_ms={rng.randrange(1, 5000)}")
add("ids/log-lines", "\n".join(lines))
add("ids/uuids", " ".join(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(30)))
add("ids/timestamps", ", ".join((start + timedelta(seconds=rng.randrange(10**8))).strftime(fmt) for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%d/%m/%Y %H:%M", "%a, %d %b %Y %H:%M:%S GMT", "%s") for _ in range(5)))
add("ids/request-id-prefix", f"Request {rng.getrandbits(64):016x}: Summarize the attached contract and list every party.")

# --- system prompts ----------------------------------------------------------------------
add("prompt/document-analyzer", (
    "You are a document analyzer. Analyze the following document and provide insights.\n\n"
    "Document: {content}\n\nProvide your analysis in JSON with the keys \"summary\", "
    "\"entities\" and \"risks\". Be concise; do not speculate beyond the text."
))
add("prompt/support-agent", (
    "You are Ava, the customer support assistant for Northwind Outdoor Gear.\n\n"
    "## Rules\n"
    "1. Be friendly, brief and accurate. Never promise refunds; explain the policy instead.\n"
    "2. Orders ship within 2 business days. Returns are accepted within 30 days with a receipt.\n"
    "3. If the customer is angry, acknowledge the problem before offering a solution.\n"
    "4. Escalate to a human (call the `escalate` tool) for legal threats or safety issues.\n\n"
    "## Tools\n- lookup_order(order_id: string)\n- escalate(reason: string)\n\n"
    "Today's date is 2026-11-26. The customer's name is {name}.\n"
))
add("prompt/code-reviewer", (
    "You are a senior engineer reviewing a pull request. For each file in the diff:\n"
    "  - point out bugs, races and unhandled errors first;\n"
    "  - then readability problems;\n"
    "  - say nothing about formatting (rustfmt/black already ran).\n\n"
    "Answer as a Markdown list grouped by file. Quote the line you mean with `>`.\n"
    "If the change looks good, reply exactly: LGTM\n"
))
add("prompt/extractor-with-schema", (
    "Extract the invoice fields and reply with JSON matching this schema:\n"
    + json.dumps({"type": "object", "properties": {"invoice_number": {"type": "string"}, "total": {"type": "number"}, "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}, "line_items": {"type": "array", "items": {"type": "object", "properties": {"description": {"type": "string"}, "amount": {"type": "number"}}}}}, "required": ["invoice_number", "total"]}, indent=2)
    + "\n\nInvoice text:\n\"\"\"\nINVOICE #INV-2026-0042\r\nTotal due: EUR 1.234,56\r\n\"\"\"\n"
))
add("prompt/chat-rendering", "system\nYou are terse.\nuser\nHi there!\nassistant\nHello.\nuser\nWhat's 2+2?\n")

# --- special-token text (encoded as ordinary text) --------------------------------------
add("special-token-text", "<|endoftext|> <|im_start|>system<|im_sep|>hi<|im_end|> <|fim_prefix|>")

# --- seeded random strings over a hostile alphabet ---------------------------------------
alphabet = list(" \t\n\r\u00a0aAzZ'sStTrReEvVlLmMdD0123456789.,;:!?/\\\"{}[]()<>-_=+*&^%$#@~`|éÉß日本語中文한국ع्हाǅ\u0301\u200d😀👍🏽🇫🇷")
for i in range(200):
    n = rng.randrange(0, 120)
    add(f"fuzz/{i:03d}", "".join(rng.choice(alphabet) for _ in range(n)))
# whitespace-heavy fuzz: runs of mixed whitespace between short words
ws = [" ", "  ", "\n", "\r\n", "\t", " \n", "\n ", "\u00a0", "   \n\n  "]
words = ["a", "The", "don't", "1234", "{x}", ".", "日本", "e\u0301", "WORD", "'s"]
for i in range(100):
    parts = []
    for _ in range(rng.randrange(1, 30)):
        parts.append(rng.choice(ws) * rng.randrange(1, 6))
        parts.append(rng.choice(words))
    if rng.random() < 0.5:
        parts.append(rng.choice(ws) * rng.randrange(1, 6))
    add(f"fuzz-ws/{i:03d}", "".join(parts))


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8", newline="\n") as f:
        for name, text in cases:
            f.write(json.dumps({"name": name, "text": text}, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(cases)} cases, {sum(len(t.encode()) for _, t in cases)} bytes of text")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Builds the table of a bench/run.sh run from the raw files in its output folder.

Usage: python3 bench/report.py OUT_DIR   (stdlib only; run.sh calls it at the end)

Reads oha's JSON (`*.oha.json`: summary.requestsPerSec, latencyPercentiles in seconds),
bench_client's JSON (`*.client.json`), redis-benchmark's CSV, the proxy's /metrics
before and after a run (to prove a hit run was all hits), and the notes run.sh left.
Prints one Markdown table, then the notes and the machine.
"""

import csv
import json
import os
import re
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else "."
rows = []
checks = []


def path(name):
    return os.path.join(OUT, name)


def load(name):
    try:
        with open(path(name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def oha(name):
    """(req/s, avg ms, p50 ms, p99 ms, non-2xx-or-error count, total) of an oha run."""
    d = load(name + ".oha.json")
    if not d:
        return None
    s, p = d["summary"], d.get("latencyPercentiles") or {}
    codes = d.get("statusCodeDistribution") or {}
    errors = sum(d.get("errorDistribution", {}).values())
    total = sum(codes.values()) + errors
    bad = errors + sum(v for k, v in codes.items() if not k.startswith("2"))
    ms = lambda v: None if v is None else v * 1e3  # noqa: E731
    return {
        "rps": s.get("requestsPerSec"),
        "avg": ms(s.get("average")),
        "p50": ms(p.get("p50")),
        "p99": ms(p.get("p99")),
        "bad": bad,
        "total": total,
    }


def hits_between(name):
    """Hits the proxy counted between the .before and .after metrics snapshots."""

    def count(f):
        try:
            text = open(path(f)).read()
        except OSError:
            return None
        n = 0.0
        for line in text.splitlines():
            if line.startswith("prefixcache_requests_total{") and 'status="hit"' in line:
                n += float(line.rsplit(" ", 1)[1])
        return n

    a, b = count(name + ".before.metrics"), count(name + ".after.metrics")
    return None if a is None or b is None else int(b - a)


def f(v, digits=2):
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def row(scn, run, rps=None, avg=None, p50=None, p99=None, vs="", notes=""):
    rows.append([scn, run, f(rps, 0), f(avg), f(p50), f(p99), vs, notes])


def share(x):
    """A ratio as a percentage, with a decimal when it is small."""
    return f"{x:.0%}" if x >= 0.095 else f"{x:.1%}"


def mark(ok):
    return "met" if ok else "MISSED"


def oha_row(scn, run, name, base=None, expect_hits=False):
    r = oha(name)
    if not r:
        return None
    notes = []
    if r["bad"]:
        notes.append(f"{r['bad']} of {r['total']} failed or non-2xx")
    if expect_hits:
        h = hits_between(name)
        if h is not None:
            notes.append(f"hits {h}/{r['total']}")
    vs = ""
    if base and base.get("rps"):
        vs = f"{share(r['rps'] / base['rps'])} of bare"
    row(scn, run, r["rps"], r["avg"], r["p50"], r["p99"], vs, "; ".join(notes))
    return r


# 1. hit path
bare = oha_row("1", "mock direct, 0 ms (bare)", "s1-bare")
for store in ("memory", "disk"):
    r = oha_row("1", f"proxy HIT, {store} store", f"s1-{store}", bare, expect_hits=True)
    if r and bare:
        ratio = r["rps"] / bare["rps"]
        checks.append(
            f"1 ({store}): throughput {ratio:.0%} of bare (target >= 50%: {mark(ratio >= 0.5)}), "
            f"p99 {r['p99']:.2f} ms (target < 2 ms: {mark(r['p99'] < 2)})"
        )

# 2. miss path
for conc in ("c50", "c1"):
    d = oha_row("2", f"mock direct, 20 ms, {conc.replace('c', 'c=')}", f"s2-direct-20ms-{conc}")
    p = oha(f"s2-proxy-20ms-{conc}")
    if p:
        vs = ""
        if d:
            vs = f"{p['p50'] - d['p50']:+.2f} ms p50, {p['p99'] - d['p99']:+.2f} ms p99"
            checks.append(
                f"2 ({conc}): added {p['p50'] - d['p50']:.3f} ms p50 (target < 0.3: "
                f"{mark(p['p50'] - d['p50'] < 0.3)}), {p['p99'] - d['p99']:.3f} ms p99 "
                f"(target < 1: {mark(p['p99'] - d['p99'] < 1)})"
            )
        notes = f"{p['bad']} failed" if p["bad"] else ""
        row("2", f"proxy no-cache, 20 ms, {conc.replace('c', 'c=')}", p["rps"], p["avg"], p["p50"], p["p99"], vs, notes)
d0 = oha_row("2", "mock direct, 0 ms, c=50", "s2-direct-0ms-c50")
p0 = oha("s2-proxy-0ms-c50")
if p0:
    vs = f"{share(p0['rps'] / d0['rps'])} of upstream" if d0 else ""
    row("2", "proxy no-cache, 0 ms, c=50", p0["rps"], p0["avg"], p0["p50"], p0["p99"], vs,
        f"{p0['bad']} failed" if p0["bad"] else "")
    if d0:
        checks.append(
            f"2: miss-path throughput {p0['rps'] / d0['rps']:.0%} of upstream's own "
            f"(target >= 40%: {mark(p0['rps'] / d0['rps'] >= 0.4)})"
        )

# 3. streaming
for mode in ("miss", "hit"):
    d = load(f"s3-{mode}.client.json")
    if not d:
        continue
    t = d["targets"]
    for name in ("direct", "proxy"):
        x = t.get(name)
        if not x:
            continue
        vs = ""
        if name == "proxy" and "direct" in t:
            dt = x["ttfb"]["p50_ms"] - t["direct"]["ttfb"]["p50_ms"]
            vs = f"TTFB {dt:+.2f} ms p50, {x['ttfb']['p99_ms'] - t['direct']['ttfb']['p99_ms']:+.2f} ms p99"
            if mode == "miss":
                checks.append(f"3: TTFB on a miss {dt:+.3f} ms p50 vs direct (target within 1 ms: {mark(dt < 1)})")
        st = ", ".join(f"{k} {v}" for k, v in x["statuses"].items())
        row("3", f"stream {mode}: {name} (TTFB)", None, x["ttfb"]["avg_ms"], x["ttfb"]["p50_ms"],
            x["ttfb"]["p99_ms"], vs,
            f"total p50 {x['total']['p50_ms']:.2f} / p99 {x['total']['p99_ms']:.2f} ms; {st}; "
            f"{x['response_bytes']} B")

# 4. redis
def redis_gets(name):
    try:
        m = re.search(r"cmdstat_get:calls=(\d+)", open(path(name + ".commandstats")).read())
        return int(m.group(1)) if m else 0
    except OSError:
        return None


r4 = None
for name, label in (("s4-redis", "proxy HIT, redis store (memory tier in front)"),
                    ("s4-redis-notier", "proxy HIT, redis store, memory_ttl = 0")):
    r = oha_row("4", label, name, bare, expect_hits=True)
    if r:
        r4 = r  # the comparison with redis-benchmark uses the last: every hit a GET
        g = redis_gets(name)
        if g is not None:
            rows[-1][7] += f"; Redis GETs during the run: {g}"
try:
    with open(path("s4-redis-benchmark.csv")) as fh:
        for rec in csv.DictReader(fh):
            size = open(path("s4-entry-bytes")).read().strip()
            vs = ""
            if r4 and rec.get("p99_latency_ms"):
                gap = r4["p99"] - float(rec["p99_latency_ms"])
                vs = f"proxy p99 {gap:+.2f} ms"
                checks.append(f"4: proxy p99 on a Redis hit {gap:+.2f} ms from Redis GET p99 (target within 1 ms: {mark(gap < 1)})")
            row("4", f"redis-benchmark {rec['test']} -d {size} -c 50", float(rec["rps"]),
                float(rec["avg_latency_ms"]), float(rec["p50_latency_ms"]),
                float(rec["p99_latency_ms"]), vs, "")
except OSError:
    pass

# 5. the article
art = {}
for when in ("before", "after"):
    d = load(f"s5-{when}.client.json")
    if not d:
        continue
    art[when] = d
    lat = d["latency"]
    st = d["statuses"]
    n = max(1, sum(st.values()))
    hits = st.get("HIT", 0) + st.get("COALESCED", 0)
    notes = f"${d['dollars_per_request']:.5f}/request"
    if when == "after":
        notes += f"; HIT {st.get('HIT', 0)}, COALESCED {st.get('COALESCED', 0)}, MISS {st.get('MISS', 0)} ({hits / n:.0%} answered without upstream)"
    notes += f"; {d['distinct_bodies']} distinct of {d['requests']}"
    if d["errors"]:
        notes += f"; errors {d['errors']}"
    row("5", f"article {when}: {'direct' if when == 'before' else 'through prefixcache'}",
        d["requests"] / d["wall_s"], lat["avg_ms"], lat["p50_ms"], lat["p99_ms"], "", notes)
if art:
    d = next(iter(art.values()))
    pr = d.get("prices_per_million", {})
    checks.append("5: dollars from each response's usage at {}'s prices in core::pricing: ${} input, ${} cached "
                  "input, ${} output per million tokens; HIT and COALESCED answers cost nothing".format(
                      d.get("priced_as", "?"), pr.get("input"), pr.get("cached_input"), pr.get("output")))
if len(art) == 2:
    b, a = art["before"], art["after"]
    checks.append(
        "5: avg {:.0f} -> {:.0f} ms, p99 {:.0f} -> {:.0f} ms, ${:.4f} -> ${:.4f} per request "
        "({:.0%} less) (the article: avg 1247 -> 183 ms, p99 3421 -> 412 ms, $0.032 -> $0.008, 75% less)".format(
            b["latency"]["avg_ms"], a["latency"]["avg_ms"], b["latency"]["p99_ms"], a["latency"]["p99_ms"],
            b["dollars_per_request"], a["dollars_per_request"],
            1 - a["dollars_per_request"] / b["dollars_per_request"] if b["dollars_per_request"] else 0))

# memory
try:
    idle = int(open(path("mem-idle-kib")).read())
    d = load("mem-fill.client.json")
    notes = f"idle {idle / 1024:.0f} MiB (tokenizer tables loaded)"
    if d:
        r = d["rss_kib"]
        limit = idle + 256 * 1024 * 1.15
        notes += (f"; under load max {r['max_during'] / 1024:.0f} MiB, end {r['end'] / 1024:.0f} MiB, "
                  f"{d['bytes_received'] / 2**20:.0f} MiB of answers ({d['statuses']})")
        checks.append(f"memory: max RSS {r['max_during'] / 1024:.0f} MiB vs idle + 256 MiB + 15% = "
                      f"{limit / 1024:.0f} MiB ({mark(r['max_during'] <= limit)})")
    try:
        notes += "; " + ", ".join(open(path("mem-store.metrics")).read().split("\n")[:2])
    except OSError:
        pass
    row("mem", "proxy RSS, memory store 256 MiB", notes=notes)
except (OSError, ValueError):
    pass

# 6. LiteLLM
oha_row("6", "LiteLLM HIT (redis cache)", "s6-litellm-hit", bare)
l20 = oha("s6-litellm-20ms-c50")
if l20:
    d = oha("s2-direct-20ms-c50")
    vs = f"{l20['p50'] - d['p50']:+.2f} ms p50, {l20['p99'] - d['p99']:+.2f} ms p99" if d else ""
    row("6", "LiteLLM no-cache, 20 ms, c=50", l20["rps"], l20["avg"], l20["p50"], l20["p99"], vs,
        f"{l20['bad']} failed" if l20["bad"] else "")
l0 = oha("s6-litellm-0ms-c50")
if l0:
    d0 = oha("s2-direct-0ms-c50")
    row("6", "LiteLLM no-cache, 0 ms, c=50", l0["rps"], l0["avg"], l0["p50"], l0["p99"],
        f"{share(l0['rps'] / d0['rps'])} of upstream" if d0 else "", f"{l0['bad']} failed" if l0["bad"] else "")
try:
    rss = int(open(path("s6-litellm-rss-kib")).read())
    row("6", "LiteLLM RSS (all processes)", notes=f"{rss / 1024:.0f} MiB after the runs")
except (OSError, ValueError):
    pass

head = ["#", "run", "req/s", "avg ms", "p50 ms", "p99 ms", "vs baseline", "notes"]
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for r in rows:
    print("| " + " | ".join(r) + " |")
if checks:
    print("\nTargets:")
    for c in checks:
        print(f"- {c}")
try:
    notes = [l.rstrip("\n").split("\t", 1) for l in open(path("notes.tsv")) if l.strip()]
    if notes:
        print("\nNotes:")
        for k, v in notes:
            print(f"- {k}: {v}")
except OSError:
    pass
try:
    m = dict(l.rstrip("\n").split("\t", 1) for l in open(path("machine.tsv")) if "\t" in l)
    print("\nMachine: {} CPUs, {}; {} ({} run, commit {}); load average before {} (compilers running: {}), after {} (compilers: {}); {}".format(
        m.get("cpus"), m.get("cpu"), m.get("date"), m.get("mode"), m.get("commit"),
        m.get("load_before"), m.get("busy_before"), m.get("load_after", "?"), m.get("busy_after", "?"), m.get("oha")))
except OSError:
    pass

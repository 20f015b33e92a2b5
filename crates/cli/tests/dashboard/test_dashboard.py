"""The dashboard in headless Chromium, driven by selenium, against the real proxy.

Run by crates/cli/tests/dashboard.rs with PROXY_URL (main listener), ADMIN_URL (admin
listener, where /dashboard is), ARTIFACTS (a directory for screenshots), CHROMIUM and
CHROMEDRIVER. Checks: the empty state before any request; after a MISS, a HIT and a
request with a dynamic prefix, the page shows the counts and dollars of /metrics, the
family with its finding; no console errors; no request leaves the proxy's origin; no
horizontal overflow at 1280 and 390 px, light and dark; keyboard operation.
"""

import json
import os
import re
import sys
import time
import urllib.request
from urllib.parse import urlparse

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.support.ui import WebDriverWait

PROXY = os.environ["PROXY_URL"]
ADMIN = os.environ["ADMIN_URL"]
ARTIFACTS = os.environ["ARTIFACTS"]
DASHBOARD = ADMIN + "/dashboard"
os.makedirs(ARTIFACTS, exist_ok=True)

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def chat(messages):
    body = json.dumps({"model": "gpt-4o-mini", "messages": messages}).encode()
    req = urllib.request.Request(
        PROXY + "/v1/chat/completions",
        data=body,
        headers={"Authorization": "Bearer sk-dashboard-test", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        resp.read()
        return resp.headers


def metrics():
    with urllib.request.urlopen(ADMIN + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def metric_sum(samples, prefix, **labels):
    total = 0.0
    for name, value in samples.items():
        if not name.startswith(prefix + "{") and name != prefix:
            continue
        if all(f'{k}="{v}"' in name for k, v in labels.items()):
            total += value
    return total


def driver():
    opts = webdriver.ChromeOptions()
    opts.binary_location = os.environ["CHROMIUM"]
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--window-size=1280,900",
    ]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=os.environ["CHROMEDRIVER"]), options=opts)


def wait_loaded(d, after=None):
    """Waits until the page has rendered a summary (newer than `after`, if given)."""
    def loaded(drv):
        v = drv.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
        return v if v and (after is None or int(v) > int(after)) else False

    return WebDriverWait(d, 120).until(loaded)


def value(d, key):
    els = d.find_elements(By.CSS_SELECTOR, f'[data-key="{key}"]')
    check(len(els) > 0, f"the page shows {key}")
    return els[0] if els else None


def screenshot(d, name, width):
    d.execute_script("document.activeElement && document.activeElement.blur()")
    d.set_window_size(width, 900)
    height = d.execute_script("return document.documentElement.scrollHeight")
    d.set_window_size(width, height)

    def overflow(drv):
        return drv.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )

    # The resize handler redraws the charts debounced: wait for the page to fit (bounded
    # only so that a page that never fits fails), not for a fixed time.
    try:
        WebDriverWait(d, 60, poll_frequency=0.05).until(lambda drv: overflow(drv) <= 0)
    except TimeoutException:
        pass
    left = overflow(d)
    check(left <= 0, f"{name}: no horizontal overflow at {width} px (overflow {left} px)")
    path = os.path.join(ARTIFACTS, f"{name}-{width}.png")
    d.save_screenshot(path)
    print(f"     screenshot {path}", flush=True)


def usd_text(text):
    return float(re.sub(r"[$,]", "", text))


d = driver()
try:
    # ---------------------------------------------------------------- empty state
    d.get(DASHBOARD)
    wait_loaded(d)
    empty = d.find_element(By.ID, "empty")
    check(empty.is_displayed(), "before any request the empty state is shown")
    check("/v1" in d.find_element(By.ID, "empty-python").text, "the empty state says where to point base_url")
    check(PROXY.split("//")[1] in d.find_element(By.ID, "empty-curl").text, "the curl example names this proxy")
    screenshot(d, "dashboard-empty", 1280)

    # ---------------------------------------------------------------- traffic
    stable = [
        {"role": "system", "content": "You are a careful assistant. Answer in one short sentence."},
        {"role": "user", "content": "Name three prime numbers."},
    ]
    first = chat(stable)
    second = chat(stable)
    dynamic = chat([
        {"role": "system", "content": "RequestID: 3f2b8c1e-9d4a-4b7e-8f6a-1c2d3e4f5a6b. You are a careful assistant."},
        {"role": "user", "content": "Name three prime numbers."},
    ])
    check(first["x-prefixcache-status"] == "MISS", "first request is a MISS")
    check(second["x-prefixcache-status"] == "HIT", "second request is a HIT")
    check(dynamic["x-prefixcache-status"] == "MISS", "dynamic-prefix request is a MISS")
    check("dynamic-prefix" in (dynamic.get("x-prefixcache-warning") or ""), "it carries the dynamic-prefix warning")
    stable_family = first["x-prefixcache-family"]
    dynamic_family = dynamic["x-prefixcache-family"]

    # Misses are accounted when their upstream response has been read: wait for both.
    deadline = time.monotonic() + 120
    while metric_sum(metrics(), "prefixcache_provider_cacheable_total") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    m = metrics()

    # ---------------------------------------------------------------- the figures
    d.get(DASHBOARD)
    wait_loaded(d)
    check(not d.find_element(By.ID, "empty").is_displayed(), "the empty state is gone after traffic")
    for status in ["hit", "miss", "coalesced", "bypass", "error"]:
        want = int(metric_sum(m, "prefixcache_requests_total", status=status))
        got = value(d, f"requests.since_start.{status}")
        check(got is not None and got.text == f"{want:,}", f"{status} since start: page {got.text if got else None!r} == /metrics {want}")
    check(int(metric_sum(m, "prefixcache_requests_total", status="hit")) == 1, "/metrics counts one hit")
    check(int(metric_sum(m, "prefixcache_requests_total", status="miss")) == 2, "/metrics counts two misses")
    for kind in ["spent", "saved"]:
        want = metric_sum(m, "prefixcache_cost_usd_total", kind=kind)
        check(want > 0, f"/metrics has dollars {kind}")
        got = value(d, f"money.{kind}_usd.since_start")
        raw = float(got.get_attribute("data-value"))
        check(abs(raw - want) <= 1e-12 * max(1.0, want), f"{kind} since start: page {raw!r} == /metrics {want!r}")
        shown = usd_text(got.text)
        check(abs(shown - want) <= 0.01 * want, f"{kind} since start as shown: {got.text} ~ {want}")
        today = float(value(d, f"money.{kind}_usd.today").get_attribute("data-value"))
        check(abs(today - want) <= 1e-12 * max(1.0, want), f"{kind} today equals since start on a fresh process")
    tokens_saved = int(value(d, "tokens.saved.since_start").get_attribute("data-value"))
    want_saved = int(metric_sum(m, "prefixcache_tokens_total", source="cache", kind="prompt")
                     + metric_sum(m, "prefixcache_tokens_total", source="cache", kind="completion"))
    check(tokens_saved == want_saved and tokens_saved > 0, f"tokens saved {tokens_saved} == /metrics {want_saved}")
    hit_ratio = value(d, "hit_ratio.since_start").text
    check(hit_ratio == "33.3%", f"hit ratio since start is 1 of 3: {hit_ratio}")
    check("below the 0.6 alert line" in d.find_element(By.ID, "alert-badge").text, "the alert badge says the ratio is below 0.6")

    # ---------------------------------------------------------------- families
    rows = {r.get_attribute("data-family"): r for r in d.find_elements(By.CSS_SELECTOR, "#families tbody tr[data-family]")}
    check(stable_family in rows, f"the stable family {stable_family} is listed")
    check(dynamic_family in rows, f"the dynamic family {dynamic_family} is listed")
    if stable_family in rows:
        rate = value(d, f"family.{stable_family}.hit_ratio_last_hour").text
        check(rate == "50.0%", f"the stable family's hit rate is 1 of 2: {rate}")
        check(rows[stable_family].find_elements(By.CSS_SELECTOR, ".chip") == [], "the stable family has no finding")
    if dynamic_family in rows:
        chips = rows[dynamic_family].find_elements(By.CSS_SELECTOR, '.chip[data-rule="dynamic-prefix"]')
        check(len(chips) > 0, "the dynamic family shows its dynamic-prefix finding")
        if chips:
            text = chips[0].text
            check(re.search(r"dynamic-prefix · [a-z-]+ · tokens \d+–\d+", text) is not None, f"as rule, kind and token span: {text!r}")
            check("3f2b8c1e" not in rows[dynamic_family].text, "never the prompt text")
    page_text = d.find_element(By.TAG_NAME, "body").text
    check("3f2b8c1e" not in page_text and "careful assistant" not in page_text, "no prompt text anywhere on the page")
    findings = d.find_elements(By.CSS_SELECTOR, "#findings tbody th")
    check(any(f.text.startswith("dynamic-prefix") for f in findings), "the findings table lists dynamic-prefix")

    check("this replica only" in d.find_element(By.ID, "scope").text, "the page says it shows this replica")
    check(d.find_elements(By.CSS_SELECTOR, "#chart-hit svg line.threshold") != [], "the hit-ratio chart has the alert line")
    check(d.find_elements(By.CSS_SELECTOR, "#chart-req svg path.area") != [], "the requests chart has data")
    check(value(d, "store.degraded").get_attribute("data-value") == "false", "the store is healthy")
    check(value(d, "latency.hit.count").text == "1", "latency counts the hit")

    # ---------------------------------------------------------------- refresh
    before = d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded")
    chat(stable)
    after = wait_loaded(d, before)
    check(int(after) > int(before), "the page refreshes on its own")
    WebDriverWait(d, 120).until(lambda drv: drv.find_element(By.CSS_SELECTOR, '[data-key="requests.since_start.hit"]').text == "2")
    check(True, "a new hit shows up without a reload")

    # ---------------------------------------------------------------- keyboard
    body = d.find_element(By.TAG_NAME, "body")
    d.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    body.send_keys(Keys.TAB)
    active = d.switch_to.active_element
    check(active.get_attribute("class") == "skip", "Tab first reaches the skip link")
    active.send_keys(Keys.TAB)
    pause = d.switch_to.active_element
    check(pause.get_attribute("id") == "pause", "then the pause button")
    pause.send_keys(Keys.ENTER)
    check(d.find_element(By.ID, "pause").get_attribute("aria-pressed") == "true", "Enter pauses updates")
    d.find_element(By.ID, "pause").send_keys(Keys.SPACE)
    check(d.find_element(By.ID, "pause").get_attribute("aria-pressed") == "false", "Space resumes them")

    # ---------------------------------------------------------------- layout, light and dark
    wait_loaded(d)
    screenshot(d, "dashboard-light", 1280)
    screenshot(d, "dashboard-light", 390)
    d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    bg = d.execute_script("return getComputedStyle(document.body).backgroundColor")
    check(bg not in ("rgb(246, 247, 249)", "rgb(255, 255, 255)"), f"dark mode changes the background ({bg})")
    screenshot(d, "dashboard-dark", 1280)
    screenshot(d, "dashboard-dark", 390)

    # ---------------------------------------------------------------- console and network
    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    check(severe == [], f"no console errors: {severe}")
    origin = urlparse(ADMIN)
    outside = []
    seen = 0
    for entry in d.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") != "Network.requestWillBeSent":
            continue
        url = msg["params"]["request"]["url"]
        seen += 1
        u = urlparse(url)
        if u.scheme in ("data", "about", "blob"):
            continue
        if (u.scheme, u.netloc) != (origin.scheme, origin.netloc):
            outside.append(url)
    check(seen > 0, f"the performance log saw the page's requests ({seen})")
    check(outside == [], f"no request outside the proxy: {outside}")
    resources = d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    foreign = [r for r in resources if not r.startswith(ADMIN + "/")]
    check(foreign == [], f"resource timing: only the proxy's origin ({foreign})")
finally:
    d.quit()

if failures:
    print(f"\n{len(failures)} check(s) failed:", *failures, sep="\n  ")
    sys.exit(1)
print("\nall dashboard checks passed")

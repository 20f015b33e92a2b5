"""The official `openai` Python SDK against prefixcache in front of the mock upstream.

Run by crates/cli/tests/sdk.rs, which starts both processes and passes their URLs in
PROXY_URL and MOCK_URL. Each test uses its own message text, so tests do not share cache
entries and can run in any order.
"""

import asyncio
import json
import os
import sys
import unittest
import urllib.request
import uuid

import openai

PROXY = os.environ["PROXY_URL"]
MOCK = os.environ["MOCK_URL"]
KEY = "sk-test-" + uuid.uuid4().hex[:8]


def client(key=KEY, **kw):
    return openai.OpenAI(base_url=PROXY + "/v1", api_key=key, max_retries=0, **kw)


def aclient(key=KEY):
    return openai.AsyncOpenAI(base_url=PROXY + "/v1", api_key=key, max_retries=0)


def unique(text):
    """A prompt no other test (or earlier run) sends."""
    return f"{text} [{uuid.uuid4().hex}]"


def mock_stats():
    with urllib.request.urlopen(MOCK + "/mock/stats") as r:
        return json.load(r)


def upstream_calls():
    return mock_stats()["total"]


def chat(c, content, **kw):
    """One chat call through with_raw_response: (status header, parsed completion)."""
    raw = c.chat.completions.with_raw_response.create(
        model=kw.pop("model", "gpt-4o-mini"),
        messages=[{"role": "user", "content": content}],
        **kw,
    )
    return raw.headers.get("x-prefixcache-status"), raw.parse()


def collect_stream(raw):
    """Content, tool calls, finish reasons and usage of a streamed chat completion."""
    content, finish, usage, tools = [], [], None, {}
    for chunk in raw.parse():
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                content.append(choice.delta.content)
            for tc in choice.delta.tool_calls or []:
                t = tools.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    t["id"] = tc.id
                if tc.function and tc.function.name:
                    t["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    t["arguments"] += tc.function.arguments
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    return "".join(content), finish, usage, tools


class ChatCompletions(unittest.TestCase):
    def test_second_identical_request_is_a_hit_with_equal_body(self):
        c = client()
        prompt = unique("Say hello")
        before = upstream_calls()
        s1, r1 = chat(c, prompt, temperature=0)
        s2, r2 = chat(c, prompt, temperature=0)
        self.assertEqual((s1, s2), ("MISS", "HIT"))
        self.assertEqual(r1.model_dump(), r2.model_dump())
        self.assertEqual(upstream_calls() - before, 1)

    def test_different_parameters_miss(self):
        c = client()
        prompt = unique("Parameters")
        self.assertEqual(chat(c, prompt, temperature=0)[0], "MISS")
        self.assertEqual(chat(c, prompt, temperature=0.7)[0], "MISS")
        self.assertEqual(chat(c, prompt, temperature=0, model="gpt-4o")[0], "MISS")
        self.assertEqual(chat(c, prompt + "!", temperature=0)[0], "MISS")
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
        self.assertEqual(chat(c, prompt, temperature=0, tools=tools)[0], "MISS")
        self.assertEqual(chat(c, prompt, temperature=0)[0], "HIT")

    def test_another_api_key_misses(self):
        prompt = unique("Tenants")
        self.assertEqual(chat(client(), prompt)[0], "MISS")
        self.assertEqual(chat(client(), prompt)[0], "HIT")
        self.assertEqual(chat(client(key="sk-other-" + uuid.uuid4().hex[:6]), prompt)[0], "MISS")

    def test_stream_then_non_stream_hits_with_same_content(self):
        c = client()
        prompt = unique("Stream first")
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=True
        )
        self.assertEqual(raw.headers.get("x-prefixcache-status"), "MISS")
        streamed, finish, usage, _ = collect_stream(raw)
        self.assertEqual(finish, ["stop"])
        self.assertIsNone(usage, "usage was not requested, so no usage chunk")
        status, full = chat(c, prompt)
        self.assertEqual(status, "HIT")
        self.assertEqual(full.choices[0].message.content, streamed)
        self.assertIsNotNone(full.usage)

    def test_non_stream_then_stream_hits_with_same_content(self):
        c = client()
        prompt = unique("JSON first")
        status, full = chat(c, prompt)
        self.assertEqual(status, "MISS")
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
        )
        self.assertEqual(raw.headers.get("x-prefixcache-status"), "HIT")
        streamed, finish, usage, _ = collect_stream(raw)
        self.assertEqual(streamed, full.choices[0].message.content)
        self.assertEqual(finish, [full.choices[0].finish_reason])
        self.assertEqual(usage.prompt_tokens, full.usage.prompt_tokens)

    def test_streamed_hit_replays_the_stream(self):
        c = client()
        prompt = unique("Stream twice")
        outs = []
        for expected in ("MISS", "HIT"):
            raw = c.chat.completions.with_raw_response.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": prompt}],
                stream=True,
                stream_options={"include_usage": True},
            )
            self.assertEqual(raw.headers.get("x-prefixcache-status"), expected)
            outs.append(collect_stream(raw))
        self.assertEqual(outs[0][0], outs[1][0])
        self.assertEqual(outs[0][2].total_tokens, outs[1][2].total_tokens)

    def test_tool_calls_stream_and_hit(self):
        c = client()
        tools = [{
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }]
        msgs = [{"role": "user", "content": unique("Weather in Paris?")}]
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=msgs, tools=tools, tool_choice="required", stream=True
        )
        _, finish, _, streamed_tools = collect_stream(raw)
        self.assertEqual(finish, ["tool_calls"])
        self.assertTrue(streamed_tools)
        raw = c.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=msgs, tools=tools, tool_choice="required"
        )
        self.assertEqual(raw.headers.get("x-prefixcache-status"), "HIT")
        calls = raw.parse().choices[0].message.tool_calls
        self.assertEqual(calls[0].function.name, streamed_tools[0]["name"])
        self.assertEqual(calls[0].function.arguments, streamed_tools[0]["arguments"])
        json.loads(calls[0].function.arguments)

    def test_async_client(self):
        async def run():
            c = aclient()
            prompt = unique("Async")
            statuses = []
            for _ in range(2):
                raw = await c.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
                )
                statuses.append(raw.headers.get("x-prefixcache-status"))
            stream = await c.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], stream=True
            )
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
            await c.close()
            return statuses, text

        statuses, text = asyncio.run(run())
        self.assertEqual(statuses, ["MISS", "HIT"])
        self.assertTrue(text)

    def test_no_cache_and_no_store(self):
        c = client()
        prompt = unique("Directives")
        self.assertEqual(chat(c, prompt, extra_headers={"Cache-Control": "no-store"})[0], "MISS")
        self.assertEqual(chat(c, prompt)[0], "MISS")  # nothing was stored
        self.assertEqual(chat(c, prompt)[0], "HIT")
        self.assertEqual(chat(c, prompt, extra_headers={"Cache-Control": "no-cache"})[0], "BYPASS")


class OtherRoutes(unittest.TestCase):
    def test_embeddings(self):
        c = client()
        text = unique("embed me")
        raws = [c.embeddings.with_raw_response.create(model="text-embedding-3-small", input=text) for _ in range(2)]
        self.assertEqual([r.headers.get("x-prefixcache-status") for r in raws], ["MISS", "HIT"])
        a, b = (r.parse() for r in raws)
        self.assertEqual(a.data[0].embedding, b.data[0].embedding)

    def test_responses_api(self):
        c = client()
        text = unique("Responses API")
        raws = [c.responses.with_raw_response.create(model="gpt-4o-mini", input=text) for _ in range(2)]
        self.assertEqual([r.headers.get("x-prefixcache-status") for r in raws], ["MISS", "HIT"])
        self.assertEqual(raws[0].parse().output_text, raws[1].parse().output_text)
        # A streamed request is answered from the entry stored from JSON.
        events = list(c.responses.create(model="gpt-4o-mini", input=text, stream=True))
        done = [e for e in events if e.type == "response.completed"]
        self.assertEqual(len(done), 1)
        self.assertEqual(done[0].response.output_text, raws[0].parse().output_text)

    def test_callers_own_breakpoint_is_forwarded_unchanged(self):
        # GPT-5.6: the SDK's extra_body carries a caller's prompt_cache_breakpoint. The
        # proxy leaves it where it is (reason=caller) and the provider caches there: a
        # second request with another question reads the marked system prompt.
        system = unique("Rules of the house. " + "Cite sources and keep answers short. " * 200)
        c = client()
        def ask(question):
            raw = c.chat.completions.with_raw_response.create(
                model="gpt-5.6-terra",
                temperature=0,
                messages=[
                    {"role": "system", "content": "placeholder"},
                    {"role": "user", "content": question},
                ],
                extra_body={
                    "messages": [
                        {"role": "system", "content": [{"type": "text", "text": system,
                            "prompt_cache_breakpoint": {"mode": "explicit"}}]},
                        {"role": "user", "content": question},
                    ]
                },
            )
            return raw.headers.get("x-prefixcache-breakpoint"), raw.parse()
        header, first = ask(unique("first question"))
        self.assertTrue(header.startswith("none; reason=caller"), header)
        self.assertGreater(first.usage.prompt_tokens_details.cache_write_tokens, 1000)
        header, second = ask(unique("second question"))
        self.assertTrue(header.startswith("none; reason=caller"), header)
        self.assertGreater(second.usage.prompt_tokens_details.cached_tokens, 1000)

    def test_legacy_completions(self):
        c = client()
        prompt = unique("Once upon a time")
        raws = [c.completions.with_raw_response.create(model="gpt-3.5-turbo-instruct", prompt=prompt, max_tokens=16) for _ in range(2)]
        self.assertEqual([r.headers.get("x-prefixcache-status") for r in raws], ["MISS", "HIT"])
        self.assertEqual(raws[0].parse().choices[0].text, raws[1].parse().choices[0].text)

    def test_models_are_forwarded(self):
        models = client().models.list()
        self.assertTrue(any(m.id for m in models.data))


class Errors(unittest.TestCase):
    def test_upstream_429_passes_through_and_is_not_stored(self):
        c = client()
        prompt = unique("rate limited")
        for _ in range(2):
            with self.assertRaises(openai.RateLimitError) as ctx:
                chat(c, prompt, model="mock-error-429")
            self.assertEqual(ctx.exception.status_code, 429)

    def test_upstream_500_is_not_stored(self):
        c = client()
        prompt = unique("server error")
        before = upstream_calls()
        for _ in range(2):
            with self.assertRaises(openai.InternalServerError):
                chat(c, prompt, model="mock-error-500")
        self.assertEqual(upstream_calls() - before, 2)

    def test_unknown_strategy_is_a_400(self):
        with self.assertRaises(openai.BadRequestError) as ctx:
            chat(client(), unique("x"), extra_headers={"x-prefixcache-strategy": "nope"})
        self.assertIn("nope", str(ctx.exception))

    def test_cut_stream_raises_and_is_not_stored(self):
        c = client()
        prompt = unique("cut")
        before = upstream_calls()
        for _ in range(2):
            # A cut body surfaces as the HTTP library's protocol error while iterating
            # (its class depends on the SDK version's transport).
            with self.assertRaises(Exception):
                stream = c.chat.completions.create(
                    model="mock-cut-stream", messages=[{"role": "user", "content": prompt}], stream=True
                )
                for _ in stream:
                    pass
        # Both went upstream: the first, cut, response was not stored.
        self.assertEqual(upstream_calls() - before, 2)


if __name__ == "__main__":
    result = unittest.main(verbosity=2, exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)

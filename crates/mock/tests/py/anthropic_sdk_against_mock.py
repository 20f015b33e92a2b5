"""The official `anthropic` SDK against the mock's Messages API: every answer and stream
must parse into the SDK's own types, errors must become the SDK's exception classes."""

import asyncio
import sys

import anthropic

BASE = sys.argv[1]  # http://127.0.0.1:PORT (the SDK adds /v1/messages)
SYSTEM = "".join(f"Rule {i}: answer politely and cite the policy. " for i in range(150))

client = anthropic.Anthropic(base_url=BASE, api_key="sk-ant-test", max_retries=0)

# Plain message.
m = client.messages.create(
    model="claude-sonnet-4-5",
    max_tokens=200,
    messages=[{"role": "user", "content": "Hello"}],
)
assert isinstance(m, anthropic.types.Message), type(m)
assert m.role == "assistant" and m.stop_reason == "end_turn", m
assert m.content[0].type == "text" and m.content[0].text, m.content
assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage

# Raw response: the request id header and the parsed message.
raw = client.messages.with_raw_response.create(
    model="claude-sonnet-4-5", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]
)
assert raw.headers["request-id"].startswith("req_011C"), raw.headers
assert raw.parse()._request_id == raw.headers["request-id"]

# Prompt caching: a 1-hour marker on a long system prompt, written then read.
def cached(question):
    return client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=100,
        system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        messages=[{"role": "user", "content": question}],
    )

first, second = cached("Refund window?"), cached("Shipping time?")
assert first.usage.cache_creation_input_tokens > 1024, first.usage
assert first.usage.cache_creation.ephemeral_1h_input_tokens == first.usage.cache_creation_input_tokens
assert first.usage.cache_creation.ephemeral_5m_input_tokens == 0
assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens, second.usage
assert second.usage.cache_creation_input_tokens == 0

# count_tokens agrees with the uncached total.
count = client.messages.count_tokens(
    model="claude-sonnet-4-5",
    system=[{"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
    messages=[{"role": "user", "content": "Refund window?"}],
)
u = first.usage
assert count.input_tokens == u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens

# Streaming with the SDK's helper: events and the accumulated final message.
with client.messages.stream(
    model="claude-sonnet-4-5",
    max_tokens=200,
    messages=[{"role": "user", "content": "Hello"}],
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert final.content[0].text == text == m.content[0].text, (text, m.content)
assert final.stop_reason == "end_turn" and final.usage.output_tokens == m.usage.output_tokens

# Tool use, streamed: the SDK parses input_json_delta into the input.
tools = [{"name": "get_weather", "description": "Weather for a city.",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
with client.messages.stream(
    model="claude-sonnet-4-5", max_tokens=200, tools=tools,
    messages=[{"role": "user", "content": "Call get_weather for Paris"}],
) as stream:
    final = stream.get_final_message()
assert final.stop_reason == "tool_use", final
call = final.content[-1]
assert call.type == "tool_use" and call.name == "get_weather" and isinstance(call.input["city"], str), call

# Thinking, raw events.
events = list(client.messages.create(
    model="claude-sonnet-4-5", max_tokens=4096, stream=True,
    thinking={"type": "enabled", "budget_tokens": 2048},
    messages=[{"role": "user", "content": "Think first"}],
))
kinds = [e.type for e in events]
assert kinds[0] == "message_start" and kinds[-1] == "message_stop", kinds
deltas = [e.delta.type for e in events if e.type == "content_block_delta"]
assert "thinking_delta" in deltas and "signature_delta" in deltas, deltas

# Errors become the SDK's classes.
for model, cls, status in [
    ("mock-error-429", anthropic.RateLimitError, 429),
    ("mock-error-529", anthropic.OverloadedError, 529),
    ("mock-error-500", anthropic.InternalServerError, 500),
    ("mock-error-400", anthropic.BadRequestError, 400),
]:
    try:
        client.messages.create(model=model, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    except cls as e:
        assert e.status_code == status, e
        assert e.request_id and e.request_id.startswith("req_011C"), e.request_id
        assert e.body["type"] == "error", e.body
    else:
        raise AssertionError(f"{model}: no error")

# The async client.
async def main():
    a = anthropic.AsyncAnthropic(base_url=BASE, api_key="sk-ant-test", max_retries=0)
    m = await a.messages.create(model="claude-opus-5", max_tokens=50,
                                messages=[{"role": "user", "content": "Hello async"}])
    assert m.content[0].text
    async with a.messages.stream(model="claude-opus-5", max_tokens=50,
                                 messages=[{"role": "user", "content": "Hello async"}]) as s:
        f = await s.get_final_message()
    assert f.content[0].text == m.content[0].text

asyncio.run(main())
print("ANTHROPIC SDK OK")

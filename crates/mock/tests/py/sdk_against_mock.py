"""Drives the official openai SDK against the mock upstream: every route, streamed and
not, typed errors. Exits non-zero (with a traceback) on the first mismatch."""

import asyncio
import json
import sys

import openai
from openai import OpenAI, AsyncOpenAI

base_url = sys.argv[1]
client = OpenAI(base_url=base_url, api_key="sk-test", max_retries=0)

# Chat, not streamed.
chat = client.chat.completions.create(
    model="gpt-4o", messages=[{"role": "user", "content": "Hello"}]
)
assert chat.object == "chat.completion", chat
text = chat.choices[0].message.content
assert text and chat.choices[0].finish_reason == "stop"
assert chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens > 0
assert chat.usage.prompt_tokens_details.cached_tokens == 0

# Chat, streamed with usage: the SDK's chunk types parse, content matches.
parts, usage = [], None
for chunk in client.chat.completions.create(
    model="gpt-4o",
    messages=[{"role": "user", "content": "Hello"}],
    stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices:
        parts.append(chunk.choices[0].delta.content or "")
    if chunk.usage is not None:
        usage = chunk.usage
assert "".join(parts) == text, ("".join(parts), text)
assert usage.total_tokens == chat.usage.total_tokens

# The stream helper accumulates tool calls by index.
tools = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
]
with client.chat.completions.stream(
    model="gpt-4o", messages=[{"role": "user", "content": "get_weather in Paris"}], tools=tools
) as stream:
    for _ in stream:
        pass
    final = stream.get_final_completion()
call = final.choices[0].message.tool_calls[0]
assert call.function.name == "get_weather"
assert "city" in json.loads(call.function.arguments)

# Structured output parsed by the SDK.
from pydantic import BaseModel


class Person(BaseModel):
    name: str
    age: int


parsed = client.chat.completions.parse(
    model="gpt-4o", messages=[{"role": "user", "content": "a person"}], response_format=Person
)
assert isinstance(parsed.choices[0].message.parsed, Person)

# Legacy completions.
comp = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
assert comp.choices[0].finish_reason == "length" and comp.usage.completion_tokens == 16

# Embeddings: the SDK asks for base64 by default and decodes it.
emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
assert len(emb.data) == 2 and len(emb.data[0].embedding) == 1536
floats = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"], encoding_format="float")
assert all(abs(x - y) < 1e-6 for x, y in zip(emb.data[0].embedding, floats.data[0].embedding))

# Responses, not streamed and streamed (typed events).
resp = client.responses.create(model="gpt-4.1", input="Tell me a story", instructions="Be brief.")
assert resp.status == "completed" and resp.output_text
events = list(client.responses.create(model="gpt-4.1", input="Tell me a story", instructions="Be brief.", stream=True))
assert events[0].type == "response.created" and events[-1].type == "response.completed"
assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == resp.output_text
assert [e.sequence_number for e in events] == list(range(len(events)))
with client.responses.stream(model="gpt-4.1", input="Tell me a story", instructions="Be brief.") as s:
    for _ in s:
        pass
    assert s.get_final_response().output_text == resp.output_text

# Models.
assert any(m.id == "gpt-4o" for m in client.models.list())

# Typed errors.
for model, exc in [
    ("mock-error-400", openai.BadRequestError),
    ("mock-error-429", openai.RateLimitError),
    ("mock-error-500", openai.InternalServerError),
]:
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
        raise AssertionError(f"{model} did not fail")
    except exc as e:
        assert e.body["message"], e
try:
    client.with_options(timeout=0.5).chat.completions.create(
        model="mock-timeout", messages=[{"role": "user", "content": "x"}]
    )
    raise AssertionError("mock-timeout answered")
except openai.APITimeoutError:
    pass
try:
    for _ in client.chat.completions.create(
        model="mock-cut-stream", messages=[{"role": "user", "content": "x"}], stream=True
    ):
        pass
    raise AssertionError("cut stream ended cleanly")
except (openai.APIError, Exception) as e:  # httpx's RemoteProtocolError, or the SDK's wrapper
    assert not isinstance(e, AssertionError), e


async def main():
    aclient = AsyncOpenAI(base_url=base_url, api_key="sk-test", max_retries=0)
    r = await aclient.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hello"}])
    assert r.choices[0].message.content == text
    got = []
    async for c in await aclient.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello"}], stream=True
    ):
        got.append(c.choices[0].delta.content or "")
    assert "".join(got) == text


asyncio.run(main())
print("SDK OK")

"""Drives a running `atomskill serve` with the official `openai` client (and raw HTTP for
malformed requests). Usage: python openai_client.py BASE_URL MODEL_NAME. Exits non-zero on the
first failed check."""

import json
import sys
import threading
import urllib.error
import urllib.request

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120)
messages = [{"role": "user", "content": "List the files in the repository."}]


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")


# /v1/models
models = client.models.list().data
check([m.id for m in models] == [model], f"models: {models}")

# Log-probs, top log-probs and token ids (vLLM extensions) on a greedy completion.
r = client.chat.completions.create(
    model=model, messages=messages, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3,
    extra_body={"return_token_ids": True, "ignore_eos": True},
)
choice = r.choices[0]
check(choice.finish_reason == "length", f"finish_reason {choice.finish_reason}")
check(len(choice.logprobs.content) == 8, "8 log-prob entries")
check(all(len(e.top_logprobs) == 3 for e in choice.logprobs.content), "3 alternatives each")
check(all(e.logprob <= 0 for e in choice.logprobs.content), "log-probs are <= 0")
# Greedy: the chosen token is the most likely one.
check(all(abs(e.logprob - e.top_logprobs[0].logprob) < 1e-6 for e in choice.logprobs.content), "greedy picks the top token")
token_ids = choice.model_extra["token_ids"]
check(len(token_ids) == 8, f"token_ids {token_ids}")
check(len(r.model_extra["prompt_token_ids"]) == r.usage.prompt_tokens, "prompt_token_ids")
check(r.usage.completion_tokens == 8 and r.usage.total_tokens == r.usage.prompt_tokens + 8, f"usage {r.usage}")

r2 = client.chat.completions.create(
    model=model, messages=messages, max_tokens=8, temperature=0, logprobs=True,
    extra_body={"return_tokens_as_token_ids": True, "ignore_eos": True},
)
check([e.token for e in r2.choices[0].logprobs.content] == [f"token_id:{t}" for t in token_ids], "token_id:N strings")
check(r2.choices[0].message.content == choice.message.content, "greedy is deterministic")

# Seeds: n choices differ from each other, and the same seed gives the same choices.
def sampled(seed, n=3):
    r = client.chat.completions.create(
        model=model, messages=messages, max_tokens=12, temperature=1.0, seed=seed, n=n,
        extra_body={"ignore_eos": True, "return_token_ids": True},
    )
    return [c.model_extra["token_ids"] for c in r.choices]

a, b = sampled(11), sampled(11)
check(a == b, "same seed, same samples")
check(len({tuple(x) for x in a}) > 1, "the n choices differ")
check(sampled(12) != a, "another seed, other samples")

# Concurrent requests are batched together and get exactly what they get alone.
alone = {seed: sampled(seed, n=1) for seed in range(6)}
results = {}
def worker(seed):
    results[seed] = sampled(seed, n=1)
threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
for t in threads:
    t.start()
for t in threads:
    t.join()
check(results == alone, "concurrent results equal sequential ones")

# Streaming: the deltas add up to the non-streamed text; usage comes last.
stream = client.chat.completions.create(
    model=model, messages=messages, max_tokens=10, temperature=0, stream=True,
    stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
)
text, finish, usage = "", None, None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        text += c.delta.content or ""
        finish = c.finish_reason or finish
full = client.chat.completions.create(
    model=model, messages=messages, max_tokens=10, temperature=0, extra_body={"ignore_eos": True},
)
check(text == full.choices[0].message.content, f"stream {text!r} vs {full.choices[0].message.content!r}")
check(finish == "length" and usage is not None and usage.completion_tokens == 10, f"stream end {finish} {usage}")

# Tools are rendered into the prompt; stop strings are honoured.
tools = [{"type": "function", "function": {"name": "bash", "description": "Run a command",
          "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}}]
with_tools = client.chat.completions.create(model=model, messages=messages, tools=tools, max_tokens=4)
check(with_tools.usage.prompt_tokens > full.usage.prompt_tokens + 20, "tools are in the prompt")
history = messages + [
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
     "function": {"name": "bash", "arguments": "{\"cmd\": \"ls\"}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
]
r = client.chat.completions.create(model=model, messages=history, tools=tools, max_tokens=4)
check(r.choices[0].finish_reason in ("stop", "length", "tool_calls"), "tool round trip")
stop_text = full.choices[0].message.content
if len(stop_text.strip()) >= 4:
    stop = stop_text.strip()[2:4]
    r = client.chat.completions.create(
        model=model, messages=messages, max_tokens=10, temperature=0, stop=[stop], extra_body={"ignore_eos": True},
    )
    check(r.choices[0].finish_reason == "stop" and stop not in r.choices[0].message.content, f"stop {stop!r}")

# Bad requests: OpenAI-style errors with 4xx, and the server keeps serving.
def expect(error_type, status, **kwargs):
    try:
        client.chat.completions.create(model=kwargs.pop("model", model), **kwargs)
    except error_type as e:
        check(e.status_code == status, f"{kwargs}: status {e.status_code}")
        check(isinstance(e.body, dict) and e.body.get("message"), f"{kwargs}: body {e.body}")
        return
    raise SystemExit(f"FAILED: {kwargs} was accepted")

expect(openai.BadRequestError, 400, messages=[])
expect(openai.BadRequestError, 400, messages=messages, temperature=5)
expect(openai.BadRequestError, 400, messages=messages, max_tokens=10**9)
expect(openai.BadRequestError, 400, messages=[{"role": "wizard", "content": "x"}])
expect(openai.NotFoundError, 404, model="no-such-model", messages=messages)

def raw(body, path="/chat/completions"):
    req = urllib.request.Request(base_url + path, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

for body in [b"{", b"null", b"[]", b'{"messages": "hi"}', b'{"messages": [{"role": "user", "content": 5}]}',
             b'{"messages": [{"role": "user", "content": "x"}], "n": 1000}', bytes(range(256))]:
    status, payload = raw(body)
    check(400 <= status < 500 and "message" in payload.get("error", {}), f"{body[:40]!r}: {status} {payload}")
status, payload = raw(b"{}", path="/no/such/route")
check(status == 404 and "error" in payload, "unknown route")
check(client.chat.completions.create(model=model, messages=messages, max_tokens=2).choices, "still serving")
print("ok")

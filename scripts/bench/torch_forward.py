#!/usr/bin/env python3
"""PyTorch eager baseline for `atomskill bench model`: loads a checkpoint with transformers (eager
attention, on the bench's --device in its --dtype) and prints the median and fastest seconds of a
full-logits forward pass over the same deterministic tokens the Rust side uses, as JSON. One
warm-up pass is not timed."""

import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--batch", type=int, default=4)
parser.add_argument("--seq", type=int, default=128)
parser.add_argument("--vocab", type=int, required=True)
parser.add_argument("--repeats", type=int, default=10)
parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
parser.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
args = parser.parse_args()
dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
device = torch.device(args.device)


def sync():
    # A GPU runs the pass asynchronously: wait for it before reading the clock.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


torch.set_num_threads(max(1, torch.get_num_threads()))
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation="eager").eval().to(device)
n = args.batch * args.seq
ids = torch.tensor([1 + (i * 7919 + 13) % (args.vocab - 1) for i in range(n)]).reshape(args.batch, args.seq).to(device)
times = []
with torch.inference_mode():
    model(input_ids=ids)
    sync()
    for _ in range(args.repeats):
        start = time.perf_counter()
        model(input_ids=ids)
        sync()
        times.append(time.perf_counter() - start)
print(json.dumps({"median_s": statistics.median(times), "min_s": min(times), "threads": torch.get_num_threads()}))

#!/usr/bin/env python3
"""PyTorch eager baseline for `atomskill bench model`: loads a checkpoint with transformers (f32,
eager attention) and prints the median and fastest seconds of a full-logits forward pass over the same
deterministic tokens the Rust side uses, as JSON. One warm-up pass is not timed."""

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
args = parser.parse_args()

torch.set_num_threads(max(1, torch.get_num_threads()))
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager").eval()
n = args.batch * args.seq
ids = torch.tensor([1 + (i * 7919 + 13) % (args.vocab - 1) for i in range(n)]).reshape(args.batch, args.seq)
times = []
with torch.inference_mode():
    model(input_ids=ids)
    for _ in range(args.repeats):
        start = time.perf_counter()
        model(input_ids=ids)
        times.append(time.perf_counter() - start)
print(json.dumps({"median_s": statistics.median(times), "min_s": min(times), "threads": torch.get_num_threads()}))

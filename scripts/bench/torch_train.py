#!/usr/bin/env python3
"""PyTorch eager baseline for `atomskill bench train`: one GRPO training step (forward, token
log-probs by log_softmax + gather, the clipped token-level loss normalised by the batch's
trained-token count, backward, global grad-norm clipping, AdamW) on the same checkpoint, batch
and loss as the Rust side, repeated; prints the median and fastest step seconds and the first
step's gradient norm before clipping (which must equal the Rust side's) as JSON.

Batch (identical on both sides): `batch` rows of `seq` tokens, token i = 1 + (i*7919 + 13) %
(vocab - 1); the first half of each row is prompt (not trained), the rest trained; reward of
row r = (r * 37 % 5) / 4, groups of 4 rows; GRPO advantages (r - mean) / (std + 1e-6) with
torch.std's Bessel correction; clip 0.2/0.2; no KL, no importance weights; AdamW lr 1e-5,
betas (0.9, 0.999), eps 1e-8, weight decay 0.01 on matrices only; clip norm 1.0.

Needs torch and transformers; `scripts/bench/torch_venv.sh` makes a venv with them."""

import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--seq", type=int, default=128)
parser.add_argument("--vocab", type=int, required=True)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
args = parser.parse_args()
if args.threads > 0:
    torch.set_num_threads(args.threads)

model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
model.train()
B, T = args.batch, args.seq
ids = torch.tensor([1 + (i * 7919 + 13) % (args.vocab - 1) for i in range(B * T)]).reshape(B, T)
attention = torch.ones(B, T, dtype=torch.long)
mask = torch.zeros(B, T)
mask[:, T // 2 :] = 1.0
mask = mask[:, 1:]
rewards = torch.tensor([(r * 37 % 5) / 4 for r in range(B)], dtype=torch.float64)
adv = torch.zeros(B, dtype=torch.float64)
for g in range(0, B, 4):
    r = rewards[g : g + 4]
    if len(r) > 1 and r.std() > 0:
        adv[g : g + 4] = (r - r.mean()) / (r.std() + 1e-6)
adv = adv.float()[:, None].expand(B, T - 1)
n_tokens = mask.sum()

decay = [p for p in model.parameters() if p.ndim >= 2]
no_decay = [p for p in model.parameters() if p.ndim < 2]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
    lr=1e-5, betas=(0.9, 0.999), eps=1e-8, foreach=False,
)


def step():
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    ratio = torch.exp(logp - logp.detach())
    surrogate = torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
    loss = -(surrogate * mask).sum() / n_tokens
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return norm.item()


first_grad_norm = step()
times = []
for _ in range(args.repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(json.dumps({"median_s": statistics.median(times), "min_s": min(times), "first_grad_norm": first_grad_norm, "threads": torch.get_num_threads()}))

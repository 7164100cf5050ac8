#!/usr/bin/env python3
"""Reference fixtures for the model crate's parity tests, made with transformers + torch.

Run by hand, not in CI (it needs torch):

    python3 -m venv /tmp/parity && /tmp/parity/bin/pip install torch transformers
    /tmp/parity/bin/python scripts/parity/make_fixtures.py crates/model/tests/fixtures

For each architecture it writes a tiny random checkpoint (qwen2: f32, one file, untied head;
qwen3: bf16, tied embeddings, head_dim != hidden/heads; llama: f16, sharded, llama3 rope
scaling) and `expected.safetensors` with a left-padded batch (input_ids, attention_mask) and the
f32 logits transformers computes for it (eager attention, position ids counting real tokens only).
Weights are drawn wider than transformers' init (std 0.3, norms around 1, non-zero biases) so that
the logits are far from uniform and a tolerance of 1e-4 means something.

It also writes templates/: a byte-level BPE tokenizer.json and, for the Qwen2.5 and Qwen3 chat
templates in crates/model/templates, the text and token ids of apply_chat_template for
conversations with tools, tool calls, tool responses and thinking.
"""

import copy
import json
import os
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = 320
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-6,
    attn_implementation="eager",
)

ARCHS = {
    "qwen2": (
        Qwen2ForCausalLM,
        Qwen2Config(**COMMON, max_position_embeddings=128, rope_theta=10000.0, tie_word_embeddings=False),
        torch.float32,
        None,
    ),
    "qwen3": (
        Qwen3ForCausalLM,
        Qwen3Config(**COMMON, head_dim=16, max_position_embeddings=128, rope_theta=1000000.0, tie_word_embeddings=True),
        torch.bfloat16,
        None,
    ),
    "llama": (
        LlamaForCausalLM,
        LlamaConfig(
            **COMMON,
            head_dim=8,
            max_position_embeddings=256,
            rope_theta=10000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 128,
            },
            tie_word_embeddings=False,
        ),
        torch.float16,
        "40KB",
    ),
}

LENGTHS = [7, 12, 3]


def randomize(model, generator):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=generator))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))


def make_checkpoint(name, out):
    cls, config, dtype, shard = ARCHS[name]
    generator = torch.Generator().manual_seed(1234)
    model = cls(config).eval()
    randomize(model, generator)
    # Round the weights to the storage dtype, then compute in f32 with exactly those values.
    # Only parameters: `model.to(bfloat16)` would also round buffers such as the rotary
    # inv_freq, which a loaded checkpoint recomputes in f32.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).to(torch.float32))
    directory = os.path.join(out, name)
    os.makedirs(directory, exist_ok=True)
    for f in os.listdir(directory):
        os.remove(os.path.join(directory, f))
    save_kwargs = {"safe_serialization": True}
    if shard:
        save_kwargs["max_shard_size"] = shard
    copy.deepcopy(model).to(dtype).save_pretrained(directory, **save_kwargs)
    if os.path.exists(os.path.join(directory, "generation_config.json")):
        os.remove(os.path.join(directory, "generation_config.json"))

    width = max(LENGTHS)
    ids = torch.zeros((len(LENGTHS), width), dtype=torch.int64)
    mask = torch.zeros((len(LENGTHS), width), dtype=torch.int64)
    for row, length in enumerate(LENGTHS):
        ids[row, width - length:] = torch.randint(1, VOCAB, (length,), generator=generator)
        mask[row, width - length:] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    save_file(
        {
            "input_ids": ids.to(torch.int64).contiguous(),
            "attention_mask": mask.to(torch.int64).contiguous(),
            "logits": logits.contiguous(),
        },
        os.path.join(directory, "expected.safetensors"),
        metadata={"format": "pt"},
    )
    print(name, "params", sum(p.numel() for p in model.parameters()), "files", sorted(os.listdir(directory)))


QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
ADDED = [
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city. Uses <html> & 'quotes' — and ünïcødé.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7.5},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "bash",
            "description": "Run a command.\nOutput is truncated.",
            "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
        },
    },
]

CONVERSATIONS = {
    "system_user": dict(
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there!"}],
        add_generation_prompt=True,
    ),
    "user_only_no_prompt": dict(
        messages=[{"role": "user", "content": "Ping"}, {"role": "assistant", "content": "Pong"}],
        add_generation_prompt=False,
    ),
    "tools_full_loop": dict(
        messages=[
            {"role": "user", "content": "Weather in Paris and list files?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2, "ratio": 0.5}}},
                    {"id": "call_2", "type": "function", "function": {"name": "bash", "arguments": {"cmd": "ls -la <dir> && echo \"done\""}}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 21.5}"},
            {"role": "tool", "tool_call_id": "call_2", "content": "a.txt\nb.txt"},
            {"role": "assistant", "content": "21.5°C; files a.txt, b.txt."},
            {"role": "user", "content": "Thanks — 谢谢!"},
        ],
        tools=TOOLS,
        add_generation_prompt=True,
    ),
    "tools_with_system_no_content_call": dict(
        messages=[
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Run ls"},
            {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "bash", "arguments": {"cmd": "ls"}}}]},
            {"role": "tool", "content": "x"},
        ],
        tools=TOOLS,
        add_generation_prompt=True,
    ),
    "thinking_history": dict(
        messages=[
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
            {"role": "user", "content": "<tool_response>\nok\n</tool_response>"},
            {"role": "assistant", "content": "<think>more</think>Done"},
        ],
        add_generation_prompt=False,
    ),
    "no_thinking_prompt": dict(
        messages=[{"role": "user", "content": "Quick: yes or no?"}],
        add_generation_prompt=True,
        extra={"enable_thinking": False},
    ),
}


def make_templates(out):
    directory = os.path.join(out, "templates")
    os.makedirs(directory, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = []
    for name in ["qwen2_5.jinja", "qwen3.jinja"]:
        with open(os.path.join(ROOT, "crates/model/templates", name)) as f:
            corpus.append(f.read())
    corpus.append(json.dumps(CONVERSATIONS, ensure_ascii=False))
    tok.train_from_iterator(corpus, trainer)
    from tokenizers import AddedToken

    for content, special in ADDED:
        token = AddedToken(content, special=special, normalized=False)
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
    tok.save(os.path.join(directory, "tokenizer.json"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    cases = []
    for template_name in ["qwen2_5", "qwen3"]:
        with open(os.path.join(ROOT, "crates/model/templates", template_name + ".jinja")) as f:
            template = f.read()
        for case_name, case in CONVERSATIONS.items():
            kwargs = dict(case.get("extra", {}))
            text = fast.apply_chat_template(
                case["messages"],
                tools=case.get("tools"),
                add_generation_prompt=case["add_generation_prompt"],
                tokenize=False,
                chat_template=template,
                **kwargs,
            )
            ids = fast.encode(text, add_special_tokens=False)
            cases.append(
                {
                    "template": template_name,
                    "name": case_name,
                    "messages": case["messages"],
                    "tools": case.get("tools"),
                    "add_generation_prompt": case["add_generation_prompt"],
                    "extra": kwargs,
                    "expected": text,
                    "expected_ids": ids,
                }
            )
    with open(os.path.join(directory, "cases.json"), "w") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("templates", len(cases), "cases")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "crates/model/tests/fixtures")
    torch.manual_seed(0)
    for name in ARCHS:
        make_checkpoint(name, out)
    make_templates(out)
    import transformers

    with open(os.path.join(out, "VERSIONS"), "w") as f:
        f.write(f"torch {torch.__version__}\ntransformers {transformers.__version__}\n")


if __name__ == "__main__":
    main()

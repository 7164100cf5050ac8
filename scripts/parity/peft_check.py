# By hand (not in CI): a LoRA checkpoint from `atomskill sft --lora-rank R` loads in
# transformers + peft (PyPI), and base + adapter there equals our merged weights.
# Usage: python peft_check.py BASE_MODEL_DIR CHECKPOINT_DIR
import sys, torch
from transformers import AutoModelForCausalLM
from peft import PeftModel
base_dir, ckpt = sys.argv[1], sys.argv[2]
base = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)
peft_model = PeftModel.from_pretrained(base, ckpt + "/adapter")
merged_ours = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32)
ids = torch.tensor([[5, 17, 99, 300, 42, 7, 1000, 12]])
with torch.no_grad():
    a = peft_model(ids).logits
    b = merged_ours(ids).logits
    c = AutoModelForCausalLM.from_pretrained(base_dir, torch_dtype=torch.float32)(ids).logits
print("max |peft(base+adapter) - ours merged|:", (a - b).abs().max().item())
print("max |peft - base| (the adapter does something):", (a - c).abs().max().item())

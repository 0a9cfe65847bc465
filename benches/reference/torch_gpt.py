"""PyTorch twin of headroom's GPT benchmark: the same GPT-2 (pre-norm, GELU tanh,
learned positions, tied embeddings, Conv1D-style [in, out] weights), AdamW
(0.9, 0.95, wd 0.1), SDPA causal attention, optional bf16 autocast and
per-block checkpointing, optional torch.compile, random tokens. Prints one JSON
line: median step time after warm-up, tokens/s, and peak memory
(max_memory_allocated and max_memory_reserved, to compare like with like).

python3 benches/reference/torch_gpt.py --model gpt2-124m --batch 16 --seq 1024 --precision bf16 [--compile]
python3 benches/reference/torch_gpt.py --model gpt2-350m --seq 512 --cap-gib 24 --max-batch
    the largest batch that runs a step under the cap, eager and with checkpointing
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

PRESETS = {
    "tiny": (4, 4, 64, 256, 64),
    "gpt2-124m": (12, 12, 768, 50257, 1024),
    "gpt2-350m": (24, 16, 1024, 50257, 1024),
}


class Block(nn.Module):
    def __init__(self, c, nh):
        super().__init__()
        self.nh = nh
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.nh, c // self.nh).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, n_layer, nh, c, vocab, ctx, ckpt):
        super().__init__()
        self.wte = nn.Embedding(vocab, c)
        self.wpe = nn.Embedding(ctx, c)
        self.h = nn.ModuleList(Block(c, nh) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(c)
        self.ckpt = ckpt

    def forward(self, idx, targets):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for blk in self.h:
            x = checkpoint(blk, x, use_reentrant=False) if self.ckpt else blk(x)
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def step(model, opt, idx, tgt, bf16):
    with torch.autocast(idx.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(idx, tgt)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def build(a, ckpt):
    n_layer, nh, c, vocab, ctx = PRESETS[a.model]
    torch.manual_seed(0)
    model = GPT(n_layer, nh, c, vocab, ctx, ckpt).to("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    return model, opt, vocab


def fits(a, batch, ckpt):
    """Whether one step at `batch` runs under the cap (the memory is freed after)."""
    model, opt, vocab = build(a, ckpt)
    try:
        for _ in range(2):  # the second step has the optimizer state too
            idx = torch.randint(0, vocab, (batch, a.seq), device="cuda")
            step(model, opt, idx, idx, a.precision == "bf16")
        ok = True
    except torch.OutOfMemoryError:
        ok = False
    del model, opt
    torch.cuda.empty_cache()
    return ok


def largest(a, ckpt):
    lo, hi = 0, 1
    while hi <= 1024 and fits(a, hi, ckpt):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(a, mid, ckpt) else (lo, mid)
    return lo


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gpt2-124m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--precision", default="bf16", choices=["f32", "bf16"])
    ap.add_argument("--checkpoint", action="store_true", help="recompute every block")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--cap-gib", type=float, help="cap memory (set_per_process_memory_fraction)")
    ap.add_argument("--max-batch", action="store_true", help="find the largest batch under the cap")
    ap.add_argument("--steps", type=int, default=6)
    a = ap.parse_args()
    if a.cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, a.cap_gib * 2**30 / total))
    if a.max_batch:
        print(json.dumps({
            "system": "pytorch", "model": a.model, "seq": a.seq, "cap_gib": a.cap_gib,
            "eager": largest(a, False), "checkpoint": largest(a, True),
        }))
        return
    model, opt, vocab = build(a, a.checkpoint)
    if a.compile:
        model = torch.compile(model)
    times = []
    t_first = None
    for i in range(a.steps + 2):
        idx = torch.randint(0, vocab, (a.batch, a.seq), device="cuda")
        tgt = torch.randint(0, vocab, (a.batch, a.seq), device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            step(model, opt, idx, tgt, a.precision == "bf16")
        except torch.OutOfMemoryError:
            print(json.dumps({"error": f"out of memory at batch {a.batch} (cap {a.cap_gib} GiB)"}))
            return
        torch.cuda.synchronize()
        if i == 0:
            t_first = time.perf_counter() - t0
        if i >= 2:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({
        "system": "pytorch", "model": a.model, "batch": a.batch, "seq": a.seq,
        "precision": a.precision, "checkpoint": a.checkpoint, "compile": a.compile,
        "cap_gib": a.cap_gib, "first_step_s": t_first, "step_ms": med * 1e3,
        "tokens_per_s": a.batch * a.seq / med,
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
        "peak_reserved_bytes": torch.cuda.max_memory_reserved(),
    }))


if __name__ == "__main__":
    main()

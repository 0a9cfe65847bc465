"""PyTorch eager twin of headroom's cpu jobs, for benches/cpu_vs_torch.py.

--job default   the README's `headroom train`: tiny GPT (4 layers, 4 heads, 64
                wide, byte vocabulary 256, context 64) on the bundled Shakespeare,
                last tenth held out, batch 32 x 64, 300 steps, AdamW (0.9, 0.95,
                eps 1e-8, weight decay 0.1 on matrices only), peak lr 1e-2 with
                30 warmup steps then cosine to 0.1x, global-norm clip 1.0, and
                8 validation batches every 100 steps; f32.
--job gpt2-124m GPT-2 124M (vocabulary padded to 50304 as headroom pads it) on
                random tokens, --batch x --seq, median step after 2 warm-ups.

The model is headroom's GPT: pre-norm blocks, GELU (tanh form), learned
positions, tied embeddings, N(0, 0.02) weights (0.01 for positions), residual
projections scaled by 1/sqrt(2 n_layer). The sampling RNG differs from
headroom's, so the losses agree to about 1e-2, not bit for bit. Prints one JSON
line with the wall time of the whole process's training loop, tokens/s, the
median step, the final validation loss and peak RSS.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_gpt import GPT, step  # noqa: E402  (the GPU twin's model and step)


def headroom_gpt(n_layer, nh, c, vocab, ctx):
    """torch_gpt.py's GPT (the same blocks) with headroom's init: N(0, 0.02)
    weights, 0.01 for positions, residual projections scaled by
    1/sqrt(2 n_layer), zero biases."""
    model = GPT(n_layer, nh, c, vocab, ctx, ckpt=False)
    nn.init.normal_(model.wte.weight, std=0.02)
    nn.init.normal_(model.wpe.weight, std=0.01)
    proj = 0.02 / math.sqrt(2 * n_layer)
    for blk in model.h:
        for lin, std in ((blk.c_attn, 0.02), (blk.c_fc, 0.02), (blk.c_proj, proj),
                         (blk.mlp_proj, proj)):
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)
    return model


def optimizer(model, lr):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), eps=1e-8)


def lr_at(s, peak, warmup, total, min_ratio=0.1):
    if s < warmup:
        return peak * (s + 1) / warmup
    p = min((s - warmup) / max(total - warmup, 1), 1.0)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def default_job(a):
    data = torch.tensor(list(open(a.data, "rb").read()), dtype=torch.long)
    cut = len(data) - len(data) // 10
    train, val = data[:cut], data[cut:]
    b, t, steps = 32, 64, 300
    g = torch.Generator().manual_seed(a.seed)

    def batch(part):
        starts = torch.randint(0, len(part) - t - 1, (b,), generator=g)
        x = torch.stack([part[s:s + t] for s in starts])
        y = torch.stack([part[s + 1:s + t + 1] for s in starts])
        return x, y

    torch.manual_seed(a.seed)
    model = headroom_gpt(4, 4, 64, 256, 64)
    opt = optimizer(model, 1e-2)
    times, val_loss = [], None
    start = time.perf_counter()
    for s in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(s, 1e-2, 30, steps)
        x, y = batch(train)
        t0 = time.perf_counter()
        step(model, opt, x, y, bf16=False)
        times.append(time.perf_counter() - t0)
        if (s + 1) % 100 == 0 or s + 1 == steps:
            with torch.no_grad():
                val_loss = sum(model(*batch(val)).item() for _ in range(8)) / 8
    wall = time.perf_counter() - start
    return {"system": "pytorch", "job": "default", "wall_s": wall,
            "tokens_per_s": steps * b * t / wall, "step_ms": statistics.median(times[2:]) * 1e3,
            "val_loss": val_loss, "peak_rss_bytes": peak_rss_bytes()}


def gpt2_job(a):
    torch.manual_seed(0)
    model = headroom_gpt(12, 12, 768, 50304, 1024)
    opt = optimizer(model, 6e-4)
    times = []
    for i in range(a.steps + 2):
        idx = torch.randint(0, 50257, (a.batch, a.seq))
        tgt = torch.randint(0, 50257, (a.batch, a.seq))
        t0 = time.perf_counter()
        step(model, opt, idx, tgt, bf16=False)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"system": "pytorch", "job": "gpt2-124m", "batch": a.batch, "seq": a.seq,
            "step_ms": med * 1e3, "tokens_per_s": a.batch * a.seq / med,
            "peak_rss_bytes": peak_rss_bytes()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--job", choices=["default", "gpt2-124m"], default="default")
    p.add_argument("--data", default="data/tinyshakespeare.txt")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    a = p.parse_args()
    r = default_job(a) if a.job == "default" else gpt2_job(a)
    r.update(torch=torch.__version__, threads=torch.get_num_threads())
    print(json.dumps(r))


if __name__ == "__main__":
    main()

"""headroom's cpu backend against PyTorch eager, side by side in one sitting.

    cargo build --release --bins --examples
    python3 benches/cpu_vs_torch.py [--rounds 3] [--python PYTHON] [--skip-gpt2]

Alternates, round after round: headroom's default run (f32, then --precision
bf16), the PyTorch twin of it (benches/reference/torch_cpu_twin.py), and GPT-2
124M at batch 4 x 128 in both (headroom's examples/gpt_bench). Each job is its
own process; wall time and peak RSS are read per process (os.wait4). Prints the
medians over rounds as a Markdown table with headroom/PyTorch ratios; a ratio
below 1 means headroom is faster (or smaller). Needs `torch` importable by
--python; without it, prints headroom's rows alone.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADROOM = os.path.join(ROOT, "target", "release", "headroom")
GPT_BENCH = os.path.join(ROOT, "target", "release", "examples", "gpt_bench")
TWIN = os.path.join(ROOT, "benches", "reference", "torch_cpu_twin.py")


def run(cmd):
    """(stdout, wall seconds, peak RSS bytes) of one process."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed")
    return out, wall, usage.ru_maxrss * 1024


def headroom_default(precision):
    with tempfile.TemporaryDirectory() as d:
        metrics = os.path.join(d, "m.jsonl")
        out, wall, rss = run([HEADROOM, "train", "--precision", precision,
                              "--metrics-out", metrics])
        steps = [json.loads(l) for l in open(metrics)]
    m = re.search(r"trained (\d+) steps in ([\d.]+) s \((\d+) tokens/s.*final val loss ([\d.]+)", out)
    step_ms = [32 * 64 / s["tokens_per_s"] * 1e3 for s in steps if "tokens_per_s" in s][2:]
    return {"wall_s": wall, "loop_s": float(m[2]), "tokens_per_s": float(m[3]),
            "step_ms": statistics.median(step_ms), "val_loss": float(m[4]), "rss": rss}


def torch_default(python):
    out, wall, rss = run([python, TWIN, "--job", "default"])
    r = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": wall, "loop_s": r["wall_s"], "tokens_per_s": r["tokens_per_s"],
            "step_ms": r["step_ms"], "val_loss": r["val_loss"], "rss": rss}


def headroom_gpt2():
    out, wall, rss = run([GPT_BENCH, "--backend", "cpu", "--model", "gpt2-124m", "--batch", "4",
                          "--seq", "128", "--steps", "5", "--precision", "f32", "--json"])
    r = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": wall, "step_ms": r["step_ms"], "tokens_per_s": r["tokens_per_s"], "rss": rss}


def torch_gpt2(python):
    out, wall, rss = run([python, TWIN, "--job", "gpt2-124m", "--batch", "4", "--seq", "128",
                          "--steps", "5"])
    r = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": wall, "step_ms": r["step_ms"], "tokens_per_s": r["tokens_per_s"], "rss": rss}


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--skip-gpt2", action="store_true")
    a = p.parse_args()
    have_torch = subprocess.run([a.python, "-c", "import torch"], capture_output=True).returncode == 0
    res = {k: [] for k in ("h32", "h16", "t32", "hg", "tg")}
    for i in range(a.rounds):
        res["h32"].append(headroom_default("f32"))
        if have_torch:
            res["t32"].append(torch_default(a.python))
        res["h16"].append(headroom_default("bf16"))
        if not a.skip_gpt2:
            res["hg"].append(headroom_gpt2())
            if have_torch:
                res["tg"].append(torch_gpt2(a.python))
        print(f"round {i + 1}/{a.rounds}: " + json.dumps({k: v[-1] for k, v in res.items() if v}),
              file=sys.stderr)

    def row(name, key, fmt, h, t, lower_better=True):
        hv = med(res[h], key)
        if not res.get(t):
            return f"| {name} | {fmt.format(hv)} | – | – |"
        tv = med(res[t], key)
        return f"| {name} | {fmt.format(hv)} | {fmt.format(tv)} | {hv / tv:.2f}× |"

    print(f"medians of {a.rounds} alternating rounds; ratio = headroom / PyTorch")
    print("| job | headroom | PyTorch eager | ratio |")
    print("|---|---|---|---|")
    print(row("default run, process wall (s)", "wall_s", "{:.1f}", "h32", "t32"))
    print(row("default run, training loop (s)", "loop_s", "{:.1f}", "h32", "t32"))
    print(row("default run, tokens/s", "tokens_per_s", "{:.0f}", "h32", "t32"))
    print(row("default run, median step (ms)", "step_ms", "{:.1f}", "h32", "t32"))
    print(row("default run, final val loss", "val_loss", "{:.4f}", "h32", "t32"))
    print(rss_row("default run, peak RSS (MiB)", res["h32"], res["t32"]))
    if res["hg"]:
        print(row("GPT-2 124M 4×128, step after warm-up (ms)", "step_ms", "{:.0f}", "hg", "tg"))
        print(row("GPT-2 124M 4×128, tokens/s", "tokens_per_s", "{:.0f}", "hg", "tg"))
        print(rss_row("GPT-2 124M 4×128, peak RSS (MiB)", res["hg"], res["tg"]))
    b, f = med(res["h16"], "loop_s"), med(res["h32"], "loop_s")
    print(f"| headroom bf16 / f32, training loop | {b:.1f} s / {f:.1f} s | | {b / f:.2f}× |")
    print(f"| headroom bf16 final val loss | {med(res['h16'], 'val_loss'):.4f} | | |")


def rss_row(name, h, t):
    hv = statistics.median(r["rss"] for r in h) / 2**20
    if not t:
        return f"| {name} | {hv:.0f} | – | – |"
    tv = statistics.median(r["rss"] for r in t) / 2**20
    return f"| {name} | {hv:.0f} | {tv:.0f} | {hv / tv:.2f}× |"


if __name__ == "__main__":
    main()

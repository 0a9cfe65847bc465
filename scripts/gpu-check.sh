#!/usr/bin/env bash
# The GPU check, for an NVIDIA machine with no network (the lent H100): it runs
# binaries built beforehand, so it needs no crates.io there.
#
# Here (a machine with crates.io):   scripts/gpu-check.sh --build   (fills .gpu-bin/)
# There:                             scripts/gpu-check.sh            (carry .gpu-bin)
#
# It runs the cuda op-parity tests against cpu, trains tiny for a few steps on
# cuda, then GPT-2 124M (bf16, 16×1024) and GPT-2 350M (24 GiB budget, 512
# tokens) with headroom and with the PyTorch twin in the same run, and prints a
# table of ratios last (after the seed table on cuda). Sized to finish in
# about 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.gpu-bin
OUT_DIR="${OUT:-/tmp/headroom-gpu-check}"
mkdir -p "$OUT_DIR"

if [ "${1:-}" = "--build" ]; then
  set -e
  cargo build --release --bin headroom --example gpt_bench --example seed_table
  cargo test --release --test backends --no-run 2>&1 | tee /tmp/headroom-test-build.log
  mkdir -p "$BIN"
  cp target/release/headroom target/release/examples/gpt_bench target/release/examples/seed_table "$BIN/"
  t=$(grep -o 'target/release/deps/backends-[0-9a-f]*' /tmp/headroom-test-build.log | tail -1)
  cp "$t" "$BIN/backends-test"
  strip "$BIN"/* 2>/dev/null || true
  du -sh "$BIN"
  exit 0
fi

[ -x "$BIN/headroom" ] || { echo "no $BIN/: run scripts/gpu-check.sh --build first and carry $BIN"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== cuda op parity (f32, bf16, f16 against cpu)"
HEADROOM_REQUIRE_CUDA=1 HEADROOM_PRINT_ERRORS=1 "$BIN/backends-test" cuda --test-threads 1 \
  > "$OUT_DIR/parity.log" 2>&1
parity=$?
grep -E "test result|FAILED|panicked" "$OUT_DIR/parity.log" | head -20
grep "Cuda" "$OUT_DIR/parity.log" | sort -k7 -g | tail -3

echo "== the same low-precision parity with attention forced onto CUDA cores"
HEADROOM_ATTENTION=cuda-cores HEADROOM_REQUIRE_CUDA=1 "$BIN/backends-test" cuda training \
  --test-threads 1 2>&1 | grep -E "test result|FAILED|panicked" | head -5

echo "== tiny on cuda, 20 steps"
timeout 120 "$BIN/headroom" train --backend cuda --steps 20 --eval-every 10 --sample-tokens 0 2>&1 | tail -4

run() { # name, timeout, command...
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$OUT_DIR/$name.json" 2> "$OUT_DIR/$name.err" || echo "{\"error\": \"$name failed: $(tail -c 300 "$OUT_DIR/$name.err" | tr '\n"' ' ')\"}" > "$OUT_DIR/$name.json"
  tail -1 "$OUT_DIR/$name.json"
}
echo "== GPT-2 124M, bf16, 16 × 1024"
run hr124 150 "$BIN/gpt_bench" --json --backend cuda --model gpt2-124m --batch 16 --seq 1024 --precision bf16 --steps 6
run pt124 120 python3 benches/reference/torch_gpt.py --model gpt2-124m --batch 16 --seq 1024 --precision bf16
echo "== GPT-2 350M, 24 GiB budget, 512 tokens, batch 48"
run hr350 150 "$BIN/gpt_bench" --json --backend cuda --model gpt2-350m --batch 48 --seq 512 --precision bf16 --budget 24GiB --steps 4
run pt350 120 python3 benches/reference/torch_gpt.py --model gpt2-350m --batch 44 --seq 512 --precision bf16 --checkpoint --steps 4

echo "== the seed table on cuda: GPT-2 124M, 8 × 1024"
timeout 90 "$BIN/seed_table" --backend cuda --model gpt2-124m --batch 8 --seq 1024 --steps 3 2>&1 | tail -7

python3 - "$OUT_DIR" <<'PY'
import json, sys
d = sys.argv[1]
def load(n):
    try:
        return json.loads(open(f"{d}/{n}.json").read().strip().splitlines()[-1])
    except Exception as e:
        return {"error": str(e)}
gib = lambda b: f"{b / 2**30:.2f}" if isinstance(b, (int, float)) else "-"
print()
print("| run | system | batch | tokens/s | peak GiB | predicted GiB | plan |")
print("|---|---|---|---|---|---|---|")
for run, hr, pt in [("124M bf16 16×1024", "hr124", "pt124"), ("350M 24GiB 512", "hr350", "pt350")]:
    for name in (hr, pt):
        r = load(name)
        if "error" in r:
            print(f"| {run} | {name} | - | - | - | - | {r['error'][:80]} |")
            continue
        peak = r.get("peak_reserved_bytes") if r["system"] == "headroom" else r.get("peak_allocated_bytes")
        plan = f"mb {r.get('micro_batch')}, {r.get('recompute')}" if r["system"] == "headroom" else ("checkpoint" if r.get("checkpoint") else "eager")
        print(f"| {run} | {r['system']} | {r['batch']} | {r['tokens_per_s']:.0f} | {gib(peak)} | {gib(r.get('predicted_peak_bytes'))} | {plan} |")
    a, b = load(hr), load(pt)
    if "error" not in a and "error" not in b:
        print(f"| {run} | ratio headroom/pytorch | | {a['tokens_per_s'] / b['tokens_per_s']:.2f} | {a['peak_reserved_bytes'] / b['peak_allocated_bytes']:.2f} | | |")
PY
exit $parity

#!/usr/bin/env bash
# The GPU check, for an NVIDIA machine with no network (the lent H100/H200): it
# runs binaries built beforehand, so it needs no crates.io there.
#
# Here (a machine with crates.io):   scripts/gpu-check.sh --build   (fills .gpu-bin/)
# There:                             scripts/gpu-check.sh            (carry .gpu-bin)
#
# Order, so that a short lease still yields the numbers that matter:
#   1. find the CUDA libraries and headers; `headroom devices`, stop at once
#      without cuda;
#   2. benchmarks: GPT-2 124M bf16 16×1024 with headroom (+ per-op profile) and
#      the PyTorch twin, eager and torch.compile; GPT-2 350M at 512 tokens under
#      a 24 GiB cap, both at the same batch, and the largest batch each fits;
#   3. op parity against cpu (once with --nocapture: the worst errors print),
#      a short cuda training run;
#   4. the table (summary.md), also printed.
# Every step has a timeout; sized for 8 minutes with kernel compilation. Files
# under $OUT: summary.md, results.json, bench.log, parity.log, train.log.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.gpu-bin
OUT_DIR="${OUT:-/tmp/headroom-gpu-check}"

if [ "${1:-}" = "--build" ]; then
  set -e
  cargo build --release --bin headroom --example gpt_bench
  cargo test --release --test backends --no-run 2>&1 | tee /tmp/headroom-test-build.log
  rm -rf "$BIN" && mkdir -p "$BIN"
  cp target/release/headroom target/release/examples/gpt_bench "$BIN/"
  t=$(grep -o 'target/release/deps/backends-[0-9a-f]*' /tmp/headroom-test-build.log | tail -1)
  cp "$t" "$BIN/backends-test"
  strip "$BIN"/* 2>/dev/null || true
  size=$(du -sm "$BIN" | cut -f1)
  echo "$BIN: ${size} MiB (the carry limit is 64 MiB)"
  [ "$size" -lt 64 ] || { echo "$BIN is too big to carry"; exit 1; }
  exit 0
fi

mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/bench.log"
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }

[ -x "$BIN/headroom" ] || chmod +x "$BIN"/* 2>/dev/null
[ -x "$BIN/headroom" ] || { say "gpu-check: no $BIN/headroom: run scripts/gpu-check.sh --build here first and carry $BIN"; exit 2; }

# CUDA's libraries, wherever this machine keeps them: the toolkit, the linker
# cache, pip's nvidia-* packages (PyTorch's wheels bring NVRTC and cuBLAS).
libdirs=()
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/*/lib /usr/local/cuda-*/targets/*/lib \
         /usr/lib/x86_64-linux-gnu /usr/lib64; do
  [ -d "$d" ] && libdirs+=("$d")
done
sites=$(timeout 20 python3 -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
for s in $sites; do
  for d in "$s"/nvidia/*/lib "$s"/torch/lib; do
    [ -d "$d" ] && libdirs+=("$d")
  done
done
joined=$(IFS=:; echo "${libdirs[*]}")
export LD_LIBRARY_PATH="${joined}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
incs=()
for d in /usr/local/cuda/include /usr/local/cuda-*/targets/*/include; do
  [ -f "$d/cuda_fp16.h" ] && incs+=("$d")
done
for s in $sites; do
  for d in "$s"/nvidia/*/include; do
    { [ -f "$d/cuda_fp16.h" ] || [ -f "$d/crt/mma.h" ]; } && incs+=("$d")
  done
done
[ ${#incs[@]} -gt 0 ] && export HEADROOM_CUDA_INCLUDE="$(IFS=:; echo "${incs[*]}")${HEADROOM_CUDA_INCLUDE:+:$HEADROOM_CUDA_INCLUDE}"
# One NVRTC compilation per kernel file for the whole check, not per process.
export HEADROOM_KERNEL_CACHE="${HEADROOM_KERNEL_CACHE:-/tmp/headroom-kernels}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

say "== $(date -u +%FT%TZ) $(timeout 10 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
say "libraries: $(for l in libcuda.so.1 libnvrtc.so libcublas.so libcublasLt.so; do
  f=$(for d in "${libdirs[@]}"; do ls "$d"/$l* 2>/dev/null; done | head -1); echo -n "$l=${f:-MISSING} "; done)"
devices=$(timeout 60 "$BIN/headroom" devices 2>&1)
echo "$devices" >> "$LOG"
if ! echo "$devices" | grep -E '^cuda ' | grep -vq unavailable; then
  say "gpu-check: cuda is not usable on this machine; stopping. headroom devices said:"
  echo "$devices" | head -8
  exit 3
fi
echo "$devices" | grep -E '^cuda ' | tee -a "$LOG" >/dev/null; echo "$devices" | grep -E '^cuda '

# Past this many seconds a step that could run into the lease's end is skipped.
DEADLINE=${GPU_CHECK_SECONDS:-540}
results="$OUT_DIR/results.jsonl"
: > "$results"
# name, timeout, command...: one JSON object per line into results.jsonl; a
# failure becomes a JSON error record (json.dumps escapes the message).
run() {
  local name=$1 limit=$2; shift 2
  if [ $((SECONDS + limit)) -gt "$DEADLINE" ]; then
    python3 -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "error": "skipped: the check ran out of time"}))' "$name" >> "$results"
    say "-- $name: skipped, out of time"
    return
  fi
  local t0=$SECONDS out
  out=$(timeout "$limit" "$@" 2>>"$LOG" | tail -1)
  local rc=$?
  if [ $rc -eq 0 ] && echo "$out" | python3 -c 'import json,sys; json.loads(sys.stdin.read())' 2>/dev/null; then
    echo "$out" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["name"]=sys.argv[1]; print(json.dumps(d))' "$name" >> "$results"
  else
    python3 -c 'import json,sys; print(json.dumps({"name": sys.argv[1], "error": sys.argv[2][-400:]}))' \
      "$name" "rc $rc after $((SECONDS - t0)) s: $(tail -c 400 "$LOG")" >> "$results"
  fi
  say "-- $name: $((SECONDS - t0)) s"
}

summarize() {
python3 - "$results" "$OUT_DIR" <<'PY' > "$OUT_DIR/summary.md"
import json, sys
rows = {}
for line in open(sys.argv[1]):
    try:
        d = json.loads(line)
        rows[d["name"]] = d
    except Exception:
        pass
json.dump(rows, open(sys.argv[2] + "/results.json", "w"), indent=1)
gib = lambda b: f"{b / 2**30:.2f}" if isinstance(b, (int, float)) else "-"
num = lambda x: f"{x:,.0f}" if isinstance(x, (int, float)) else "-"
print("| run | system | batch | tokens/s | peak reserved GiB | peak allocated GiB | predicted GiB | plan |")
print("|---|---|---|---|---|---|---|---|")
for name, label in [("hr124", "124M bf16 16×1024"), ("pt124", "124M bf16 16×1024"), ("pt124c", "124M bf16 16×1024"),
                    ("hr350", "350M 512 tok, 24 GiB"), ("pt350", "350M 512 tok, 24 GiB"), ("pt350k", "350M 512 tok, 24 GiB")]:
    r = rows.get(name, {"error": "not run"})
    if "error" in r:
        print(f"| {label} | {name} | - | - | - | - | - | {str(r['error'])[:90]} |")
        continue
    if r["system"] == "headroom":
        plan = f"micro-batch {r.get('micro_batch')}, recompute {r.get('recompute')}"
    else:
        plan = ("compile" if r.get("compile") else "eager") + (" + checkpoint" if r.get("checkpoint") else "")
    print(f"| {label} | {r['system']} | {r['batch']} | {num(r.get('tokens_per_s'))} | {gib(r.get('peak_reserved_bytes'))} "
          f"| {gib(r.get('peak_allocated_bytes'))} | {gib(r.get('predicted_peak_bytes'))} | {plan} |")
def ratio(a, b, what):
    ra, rb = rows.get(a, {}), rows.get(b, {})
    if "tokens_per_s" in ra and "tokens_per_s" in rb:
        t = ra["tokens_per_s"] / rb["tokens_per_s"]
        m = ra["peak_reserved_bytes"] / rb["peak_reserved_bytes"]
        al = ra["peak_allocated_bytes"] / rb["peak_allocated_bytes"]
        print(f"\n{a}/{b} ({what}): tokens/s {t:.2f}×, peak reserved {m:.2f}×, peak allocated {al:.2f}×", end="")
ratio("hr124", "pt124", "headroom / PyTorch eager")
ratio("hr124", "pt124c", "headroom / torch.compile")
ratio("hr350", "pt350k", "headroom / PyTorch + checkpoint, 350M")
print()
h = rows.get("hr124", {})
if "predicted_peak_bytes" in h and "peak_reserved_bytes" in h:
    e = (h["predicted_peak_bytes"] - h["peak_reserved_bytes"]) / h["peak_reserved_bytes"]
    print(f"\npredicted peak vs measured (124M): {100 * e:+.2f}%")
mx = rows.get("pt350max", {})
print(f"\nlargest 350M batch under 24 GiB at 512 tokens: headroom (planned, one micro-batch) "
      f"{rows.get('hr350', {}).get('largest_full_batch', '-')}; PyTorch eager {mx.get('eager', '-')}, "
      f"+ checkpoint {mx.get('checkpoint', '-')}")
prof = (h.get("profile") or {})
if prof:
    busy = prof.get("busy_ms", 0) or 1
    print(f"\nheadroom 124M per step, by phase and op family (CUDA events; idle between ops {prof.get('idle_ms', 0):.2f} ms):\n")
    print("| phase | family | ops | ms | share |")
    print("|---|---|---|---|---|")
    for r in prof.get("by_family", []):
        print(f"| {r['phase']} | {r['family']} | {r['calls']} | {r['ms']:.2f} | {100 * r['ms'] / busy:.1f}% |")
PY
}

PT=benches/reference/torch_gpt.py
say "== GPT-2 124M, bf16, 16 × 1024"
run hr124 150 "$BIN/gpt_bench" --json --profile --backend cuda --model gpt2-124m --batch 16 --seq 1024 --precision bf16 --steps 6
run pt124 90 python3 $PT --model gpt2-124m --batch 16 --seq 1024 --precision bf16
run pt124c 150 python3 $PT --model gpt2-124m --batch 16 --seq 1024 --precision bf16 --compile
say "== GPT-2 350M, bf16, 512 tokens, a 24 GiB cap, batch 32 for both"
run hr350 120 "$BIN/gpt_bench" --json --max-batch --backend cuda --model gpt2-350m --batch 32 --seq 512 --precision bf16 --budget 24GiB --steps 4
run pt350 60 python3 $PT --model gpt2-350m --batch 32 --seq 512 --precision bf16 --cap-gib 24 --steps 4
run pt350k 60 python3 $PT --model gpt2-350m --batch 32 --seq 512 --precision bf16 --cap-gib 24 --checkpoint --steps 4
run pt350max 75 python3 $PT --model gpt2-350m --seq 512 --precision bf16 --cap-gib 24 --max-batch

summarize  # the benchmarks' table is kept even if what follows is cut short
say "== cuda op parity against cpu (f32, bf16, f16), worst errors"
HEADROOM_REQUIRE_CUDA=1 HEADROOM_PRINT_ERRORS=1 timeout $(( DEADLINE - SECONDS > 150 ? 150 : DEADLINE - SECONDS > 10 ? DEADLINE - SECONDS : 10 )) "$BIN/backends-test" cuda --test-threads 1 --nocapture \
  > "$OUT_DIR/parity.log" 2>&1
parity=$?
grep -E "test result|FAILED|panicked" "$OUT_DIR/parity.log" | head -20 | tee -a "$LOG"
grep " Cuda " "$OUT_DIR/parity.log" | sort -k8 -g | tail -5 | tee -a "$LOG"
say "== tiny on cuda, 20 steps (head size 16: the tensor-core attention)"
timeout $(( DEADLINE - SECONDS > 90 ? 90 : DEADLINE - SECONDS > 10 ? DEADLINE - SECONDS : 10 )) "$BIN/headroom" train --backend cuda --steps 20 --eval-every 10 --sample-tokens 0 \
  > "$OUT_DIR/train.log" 2>&1
tail -3 "$OUT_DIR/train.log" | tee -a "$LOG"

summarize
cat "$OUT_DIR/summary.md"
rm -f "$results"
exit $parity

"""Check that a Hugging Face model directory reproduces a fixture's logits.

    /tmp/refenv/bin/python benches/reference/check_export.py DIR FIXTURE_DIR

DIR is anything AutoModelForCausalLM can load (config.json + model.safetensors),
typically a checkpoint headroom exported. FIXTURE_DIR holds reference.safetensors
as written by make_fixtures.py (tokens [B,T] int32, logits [B,T,V] f32).

The fixture's tokens go through the loaded model in float32 with eager
attention on the CPU, and the largest |logit difference| is printed. The exit
status is 1 when it exceeds 1e-4 times the largest |logit| in the fixture
(a relative bound, so it does not depend on the logits' scale), 0 otherwise.

Running it on a fixture directory itself (DIR == FIXTURE_DIR) tests the
round trip save_pretrained -> from_pretrained and should print 0 or ~1e-7.
"""
import argparse
import os
import sys

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

REL_TOL = 1e-4


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("fixture_dir")
    args = ap.parse_args()

    # Same numerical setting the fixtures were made in.
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    ref = load_file(os.path.join(args.fixture_dir, "reference.safetensors"))
    tokens = ref["tokens"].to(torch.int64)
    want = ref["logits"].to(torch.float32)

    model, info = AutoModelForCausalLM.from_pretrained(
        args.model_dir, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    model.eval()
    # A weight stored under a name the model does not expect (or with the
    # wrong shape) is not an error to from_pretrained: it warns and leaves that
    # parameter at a fresh random init. For an export check that is a failure
    # in its own right, so say exactly which names went wrong.
    bad = False
    for kind in ("missing_keys", "mismatched_keys", "unexpected_keys"):
        keys = sorted(str(k) for k in info.get(kind, []) or [])
        if keys:
            print(f"{kind}: {keys}")
            bad = True
    if bad:
        return 1
    vocab = model.get_input_embeddings().weight.shape[0]
    if int(tokens.max()) >= vocab or want.shape[-1] != vocab:
        print(f"vocab mismatch: model has {vocab} tokens, fixture's logits have {want.shape[-1]} "
              f"and its largest token id is {int(tokens.max())} (wrong fixture for this model?)")
        return 1
    with torch.no_grad():
        got = model(input_ids=tokens, use_cache=False).logits.to(torch.float32)

    if got.shape != want.shape:
        print(f"shape mismatch: model gives {list(got.shape)}, fixture has {list(want.shape)}")
        return 1

    diff = (got - want).abs().max().item()
    scale = want.abs().max().item()
    bound = REL_TOL * scale
    ok = diff <= bound
    print(f"{args.model_dir} vs {args.fixture_dir}: max |logit diff| = {diff:.3e} "
          f"(bound {bound:.3e} = {REL_TOL:g} * max |logit| {scale:.4f}) {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

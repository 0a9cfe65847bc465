"""Reference fixtures from Hugging Face `transformers` for headroom's parity tests.

The idea is the one llm.c's test_gpt2 uses: run a model in an independent,
well-trodden implementation, dump its weights, one fixed batch, the logits,
the loss and every parameter gradient, and let a Rust test load the same
weights and demand the same numbers.

Two tiny models are made, small enough that the fixtures stay well under 2 MB
and can be committed:

    tests/fixtures/gpt2_tiny/   GPT2LMHeadModel  (LayerNorm, GELU-tanh, learned
                                positions, Conv1D weights, tied lm_head)
    tests/fixtures/llama_tiny/  LlamaForCausalLM (RMSNorm, SwiGLU, RoPE, GQA,
                                untied lm_head)

Each directory holds what `save_pretrained` writes (config.json and
model.safetensors) plus reference.safetensors with the batch and the results.
See tests/fixtures/README.md for the conventions.

Run from the repository root:

    /tmp/refenv/bin/python benches/reference/make_fixtures.py

Optional: --out DIR (default tests/fixtures next to this repo).
"""
import argparse
import inspect
import os

import torch
import torch.nn.functional as F
import transformers
import safetensors
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

# The fixed batch shape; T must not exceed either model's position limit (16).
B, T = 2, 8

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def setup_determinism():
    # float32 on CPU only: the Rust side compares against these numbers at
    # ~1e-5, so the reference itself must not depend on the machine's GPU or
    # on TF32/bf16 shortcuts.
    torch.set_default_dtype(torch.float32)
    # Deterministic kernels, and a single thread so that CPU reductions sum in
    # the same order on every run: regenerating the fixtures should give the
    # same bytes.
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def make_gpt2():
    config = GPT2Config(
        vocab_size=96,
        n_positions=16,
        n_embd=32,
        n_layer=2,
        n_head=4,
        activation_function="gelu_new",  # tanh approximation of GELU
        resid_pdrop=0,
        embd_pdrop=0,
        attn_pdrop=0,
        layer_norm_epsilon=1e-5,
        # GPT2Config's default bos/eos (50256) lie outside a 96-token vocab and
        # only matter for generation; clear them so the config validates
        # cleanly. They play no part in the forward pass.
        bos_token_id=None,
        eos_token_id=None,
        # The plain matmul/softmax path, not SDPA: the easiest one to mirror.
        attn_implementation="eager",
    )
    # Random init from the model's own _init_weights. GPT-2 ties lm_head to
    # the token embedding (config.tie_word_embeddings defaults to True).
    model = GPT2LMHeadModel(config)
    assert model.lm_head.weight is model.transformer.wte.weight, "GPT-2 head should be tied"
    # HF starts LayerNorm gains at 1 and every bias at 0, which would let an
    # implementation that drops them match the logits. Re-draw them so the
    # forward pass depends on each.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(mean=0.0, std=0.02)
            elif ".ln_" in name or "ln_f" in name:
                p.normal_(mean=1.0, std=0.1)
    return model


def make_llama():
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention: 2 query heads per kv head
        max_position_embeddings=16,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(config)
    # HF initialises every RMSNorm gain to exactly 1, which would let a Rust
    # implementation that forgets to multiply by the gain pass the test.
    # Re-draw them around 1 so the gains visibly matter.
    with torch.no_grad():
        n = 0
        for name, module in model.named_modules():
            if type(module).__name__ == "LlamaRMSNorm":
                module.weight.normal_(mean=1.0, std=0.1)
                n += 1
    # 2 per layer (input_layernorm, post_attention_layernorm) + the final norm.
    assert n == 2 * config.num_hidden_layers + 1, n
    return model


def fixed_batch(vocab_size):
    # Own generator, seeded 1, so the batch does not depend on how many random
    # numbers the model init consumed. Targets are a second, independent draw:
    # the Rust side takes tokens and targets explicitly, so they need not be
    # the inputs shifted by one.
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, vocab_size, (B, T), generator=g, dtype=torch.int64)
    targets = torch.randint(0, vocab_size, (B, T), generator=g, dtype=torch.int64)
    return tokens, targets


def run_reference(model, vocab_size):
    model.train()  # dropout is 0 everywhere, so train() and eval() agree
    tokens, targets = fixed_batch(vocab_size)
    model.zero_grad(set_to_none=True)
    # No labels: HF would shift them internally; we want the plain per-position
    # loss against the explicit targets, exactly what the Rust side computes.
    out = model(input_ids=tokens, use_cache=False)
    logits = out.logits
    assert logits.shape == (B, T, vocab_size) and logits.dtype == torch.float32
    loss = F.cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1))  # mean over B*T
    loss.backward()

    tensors = {
        "tokens": tokens.to(torch.int32).contiguous(),
        "targets": targets.to(torch.int32).contiguous(),
        "logits": logits.detach().contiguous(),
        # Shape [1] (not a 0-dim scalar), like llm.c's single float.
        "loss": loss.detach().reshape(1).contiguous(),
    }
    # named_parameters() yields each parameter once; for GPT-2 the tied
    # lm_head.weight is the same tensor as transformer.wte.weight, so only the
    # latter appears, and its gradient already sums both uses (embedding
    # lookup and output projection).
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        tensors["grad." + name] = p.grad.detach().contiguous().clone()
    return tensors


def save_fixture(model, tensors, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    kwargs = {}
    # transformers 4.x takes safe_serialization; 5.x always writes safetensors
    # and dropped the argument (it would be silently swallowed by **kwargs).
    if "safe_serialization" in inspect.signature(model.save_pretrained).parameters:
        kwargs["safe_serialization"] = True
    model.save_pretrained(out_dir, **kwargs)
    gen = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)  # nothing here generates text
    # One metadata key only: safetensors writes the metadata map in hash
    # order, so with several keys the header (and the file's bytes) would
    # change from run to run even though every tensor is bit-identical.
    metadata = {
        "made_by": (
            f"benches/reference/make_fixtures.py; torch {torch.__version__}, "
            f"transformers {transformers.__version__}, safetensors {safetensors.__version__}; "
            f"B={B} T={T}; loss = mean cross-entropy over B*T positions, shape [1]"
        ),
    }
    save_file(tensors, os.path.join(out_dir, "reference.safetensors"), metadata=metadata)
    # safetensors writes owner-only (0600) files; make them ordinary readable
    # files like the rest of the tree.
    for f in os.listdir(out_dir):
        os.chmod(os.path.join(out_dir, f), 0o644)


def report(name, out_dir, tensors):
    print(f"== {name}: {out_dir}")
    for k, v in tensors.items():
        print(f"  {k:60s} {str(v.dtype).replace('torch.', ''):8s} {list(v.shape)}")
    print(f"  loss = {tensors['loss'].item():.8f}")
    total = 0
    for f in sorted(os.listdir(out_dir)):
        size = os.path.getsize(os.path.join(out_dir, f))
        total += size
        print(f"  file {f:30s} {size:>9d} bytes")
    print(f"  directory total {total} bytes")
    return total


def make_tokenizer(out):
    """A byte-level BPE of 300 ids trained on the first 200 kB of the bundled
    text with Hugging Face `tokenizers`, saved as tokenizer_tiny.json: the
    Rust side must read such files and give the ids Python gives."""
    from tokenizers import Tokenizer, models, trainers, pre_tokenizers, decoders

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[]
    )
    with open(os.path.join(REPO_ROOT, "data", "tinyshakespeare.txt")) as f:
        text = f.read()[:200000]
    tok.train_from_iterator([text], trainer)
    tok.save(os.path.join(out, "tokenizer_tiny.json"))
    print("tokenizer_tiny.json:", tok.get_vocab_size(), "ids;",
          "'First Citizen:\\nBefore we proceed' ->", tok.encode("First Citizen:\nBefore we proceed").ids)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "fixtures"))
    args = ap.parse_args()

    setup_determinism()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, safetensors {safetensors.__version__}")

    grand = 0
    for name, build in (("gpt2_tiny", make_gpt2), ("llama_tiny", make_llama)):
        # Re-seed before each model so each fixture is reproducible on its own,
        # whatever order (or subset) the models are built in.
        torch.manual_seed(0)
        model = build()
        vocab = model.config.vocab_size
        tensors = run_reference(model, vocab)
        out_dir = os.path.join(args.out, name)
        save_fixture(model, tensors, out_dir)
        grand += report(name, out_dir, tensors)
    make_tokenizer(args.out)
    print(f"total fixture bytes {grand}")
    assert grand < 2_000_000, "fixtures should stay under ~2 MB"


if __name__ == "__main__":
    main()

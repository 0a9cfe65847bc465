//! The one list of op cases, run by two harnesses: tests/gradcheck.rs (each
//! gradient against central differences in f64 on cpu, then in bf16 and f16)
//! and tests/backends.rs (forward outputs and gradients on cpu, wgpu and cuda
//! against the cpu backend in f64).
//!
//! **Adding an op:** add one row (a name, its operands, and how it records
//! the op on them) to the function of its family below, e.g. [`matmul`];
//! its gradient check and its parity test on every backend follow, in the
//! test named after the family in both binaries (`gradcheck matmul`,
//! `backends matmul::wgpu`). A new family is one more line in
//! [`for_each_family!`] and a function of that name.
//!
//! A row's operand values come from a seed made from its name, so renaming a
//! row changes its inputs (see [`OpCase::seeded_as`]). What a row holds is in
//! [`case`], how it runs in [`harness`].

pub mod case;
pub mod harness;

use case::{f, ids, OpCase};
use headroom::graph::{Op, Value};
use headroom::{DType, Result};

/// Calls `$m! { test_name: Variant, ... }` with every op family: each
/// harness makes one test (per backend) of each family with it, and
/// [`Family`] is made with it too, so a family cannot miss its tests.
#[macro_export]
macro_rules! for_each_family {
    ($m:ident) => {
        $m! {
            embedding: Embedding,
            matmul: Matmul,
            batched_matmul: BatchedMatmul,
            elementwise: Elementwise,
            layernorm: Layernorm,
            rmsnorm: Rmsnorm,
            rope: Rope,
            attention: Attention,
            softmax: Softmax,
            cross_entropy: CrossEntropy,
            views: Views,
            reductions: Reductions,
            cast: Cast,
        }
    };
}

macro_rules! family_enum {
    ($($test:ident: $variant:ident),* $(,)?) => {
        /// A group of ops tested together: one test per family.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Family {
            $($variant),*
        }

        impl Family {
            pub const ALL: &[Family] = &[$(Family::$variant),*];

            /// The family's rows: the function of its test's name, below.
            fn rows(self) -> Vec<OpCase> {
                match self {
                    $(Family::$variant => $test()),*
                }
            }
        }
    };
}
crate::for_each_family!(family_enum);

/// Every op case with its family, family by family.
pub fn cases() -> Vec<(Family, OpCase)> {
    Family::ALL
        .iter()
        .flat_map(|&fam| fam.rows().into_iter().map(move |c| (fam, c)))
        .collect()
}

/// The rows of one family; never empty, so that no test passes vacuously.
pub fn cases_of(family: Family) -> Vec<OpCase> {
    let all = cases();
    let mut names: Vec<&str> = all.iter().map(|(_, c)| c.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        panic!("two op cases are named {}", w[0]);
    }
    let rows = family.rows();
    assert!(!rows.is_empty(), "no op cases in {family:?}");
    rows
}

/// The outputs of a one-output op.
fn one(v: Result<Value>) -> Result<Vec<Value>> {
    Ok(vec![v?])
}

// The rows, one function per family. Shapes are small and uneven so that a
// wrong stride or a missed broadcast shows; rows named after a shape or
// variant cover broadcast, transposed, T=1 and unused-output cases.

fn embedding() -> Vec<OpCase> {
    vec![
        OpCase::new("embedding", [ids(&[2, 3], 5), f(&[5, 4])], |g, v| {
            one(g.embedding(v[0], v[1]))
        }),
        OpCase::new("embedding_1d", [ids(&[7], 3), f(&[3, 2])], |g, v| {
            one(g.embedding(v[0], v[1]))
        }),
        OpCase::new("emb", [ids(&[2, 6], 5), f(&[5, 8])], |g, v| {
            one(g.embedding(v[0], v[1]))
        }),
    ]
}

/// The four (transpose a, transpose b) combinations of `matmul_t`.
const TRANSPOSES: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

fn matmul() -> Vec<OpCase> {
    let mut c: Vec<OpCase> = TRANSPOSES
        .into_iter()
        .map(|(ta, tb)| {
            let a: &[usize] = if ta { &[4, 3] } else { &[3, 4] };
            let b: &[usize] = if tb { &[5, 4] } else { &[4, 5] };
            OpCase::new(format!("matmul_{ta}_{tb}"), [f(a), f(b)], move |g, v| {
                one(g.matmul_t(v[0], v[1], ta, tb))
            })
        })
        .collect();
    c.extend([
        OpCase::new("mm", [f(&[5, 7]), f(&[7, 3])], |g, v| {
            one(g.matmul(v[0], v[1]))
        }),
        OpCase::new("mm_t", [f(&[7, 5]), f(&[3, 7])], |g, v| {
            one(g.matmul_t(v[0], v[1], true, true))
        }),
    ]);
    c
}

fn batched_matmul() -> Vec<OpCase> {
    let mut c = Vec::new();
    for (ta, tb) in TRANSPOSES {
        let a: &[usize] = if ta { &[2, 4, 3] } else { &[2, 3, 4] };
        let b: &[usize] = if tb { &[2, 5, 4] } else { &[2, 4, 5] };
        // A weight shared by the batch (the Linear case when not ta), and its mirror.
        let b2: &[usize] = if tb { &[5, 4] } else { &[4, 5] };
        let a2: &[usize] = if ta { &[4, 3] } else { &[3, 4] };
        for (name, a, b) in [
            ("bmm", a, b),
            ("bmm_shared_b", a, b2),
            ("bmm_shared_a", a2, b),
        ] {
            c.push(OpCase::new(
                format!("{name}_{ta}_{tb}"),
                [f(a), f(b)],
                move |g, v| one(g.matmul_t(v[0], v[1], ta, tb)),
            ));
        }
    }
    c.extend([
        OpCase::new("bmm_4d", [f(&[2, 2, 3, 4]), f(&[4, 2])], |g, v| {
            one(g.matmul(v[0], v[1]))
        }),
        OpCase::new("bmm_shared", [f(&[2, 19, 17]), f(&[17, 33])], |g, v| {
            one(g.matmul(v[0], v[1]))
        }),
        OpCase::new("bmm_bt", [f(&[3, 4, 9]), f(&[3, 5, 9])], |g, v| {
            one(g.matmul_t(v[0], v[1], false, true))
        }),
    ]);
    c
}

fn elementwise() -> Vec<OpCase> {
    let mut c = Vec::new();
    let pairs: [(&[usize], &[usize]); 4] = [
        (&[2, 3, 4], &[2, 3, 4]),
        (&[2, 3, 4], &[4]),
        (&[2, 3, 4], &[3, 4]),
        (&[5], &[5]),
    ];
    for (a, b) in pairs {
        c.push(OpCase::new(
            format!("add_{a:?}_{b:?}"),
            [f(a), f(b)],
            |g, v| one(g.add(v[0], v[1])),
        ));
        c.push(OpCase::new(
            format!("mul_{a:?}_{b:?}"),
            [f(a), f(b)],
            |g, v| one(g.mul(v[0], v[1])),
        ));
    }
    c.extend([
        // The same operand on both sides: gradients from two uses must add up.
        OpCase::new("add_self", [f(&[3, 2])], |g, v| one(g.mul(v[0], v[0]))),
        OpCase::new("scale", [f(&[3, 5])], |g, v| one(g.scale(v[0], -0.7))),
        OpCase::new("gelu", [f(&[4, 6])], |g, v| one(g.gelu(v[0]))),
        OpCase::new("bias_gelu", [f(&[2, 3, 5]), f(&[5])], |g, v| {
            one(g.bias_gelu(v[0], v[1]))
        }),
        OpCase::new("gelu_3d", [f(&[2, 2, 3])], |g, v| one(g.gelu(v[0]))),
        OpCase::new("silu", [f(&[4, 6])], |g, v| one(g.silu(v[0]))),
        // SwiGLU: silu(gate) ⊙ up.
        OpCase::new("swiglu", [f(&[2, 3, 5]), f(&[2, 3, 5])], |g, v| {
            let s = g.silu(v[0])?;
            one(g.mul(s, v[1]))
        }),
        OpCase::new("add", [f(&[3, 4, 8]), f(&[8])], |g, v| {
            one(g.add(v[0], v[1]))
        }),
        OpCase::new("mul", [f(&[3, 8]), f(&[3, 8])], |g, v| {
            one(g.mul(v[0], v[1]))
        }),
        OpCase::new("bias_gelu_3x7x10", [f(&[3, 7, 10]), f(&[10])], |g, v| {
            one(g.bias_gelu(v[0], v[1]))
        })
        .seeded_as("bias_gelu"),
        OpCase::new("scale_gelu", [f(&[70])], |g, v| {
            let s = g.scale(v[0], 1.5)?;
            one(g.gelu(s))
        }),
    ]);
    c.push(residual_add_low());
    c
}

fn layernorm() -> Vec<OpCase> {
    let mut c: Vec<OpCase> = [&[2usize, 3, 8][..], &[5, 4], &[6]]
        .into_iter()
        .map(|s| {
            let ch = [*s.last().unwrap()];
            OpCase::new(
                format!("layernorm_{s:?}"),
                [f(s), f(&ch), f(&ch)],
                |g, v| one(g.layernorm(v[0], v[1], v[2], 1e-5)),
            )
        })
        .collect();
    c.push(OpCase::new(
        "ln",
        [f(&[3, 5, 16]), f(&[16]), f(&[16])],
        |g, v| one(g.layernorm(v[0], v[1], v[2], 1e-5)),
    ));
    // Autocast's LayerNorm: f32 operands, the output in the low dtype (the
    // case's own when it runs in f16/bf16; a plain LayerNorm in f32 and f64).
    c.push(OpCase::new(
        "layernorm_low_out",
        [f(&[4, 6, 40]), f(&[40]), f(&[40])],
        |g, v| {
            let low = g.dtype(v[0]);
            if !matches!(low, DType::F16 | DType::BF16) {
                return one(g.layernorm(v[0], v[1], v[2], 1e-5));
            }
            let wide = v
                .iter()
                .map(|&x| g.cast(x, DType::F32))
                .collect::<Result<Vec<_>>>()?;
            let ln = Op::LayerNorm {
                eps: 1e-5,
                out: Some(low),
            };
            Ok(g.apply(ln, &wide)?[..1].to_vec())
        },
    ));
    c
}

/// The residual add of autocast: an f32 stream plus a low projection (the
/// case's dtype in f16/bf16; plain in f32 and f64).
fn residual_add_low() -> OpCase {
    OpCase::new(
        "residual_add_low",
        [f(&[3, 7, 24]), f(&[3, 7, 24])],
        |g, v| {
            let low = g.dtype(v[1]);
            let stream = if matches!(low, DType::F16 | DType::BF16) {
                g.cast(v[0], DType::F32)?
            } else {
                v[0]
            };
            one(g.add(stream, v[1]))
        },
    )
}

fn rmsnorm() -> Vec<OpCase> {
    let mut c: Vec<OpCase> = [&[2usize, 3, 8][..], &[5, 4], &[6]]
        .into_iter()
        .map(|s| {
            let ch = [*s.last().unwrap()];
            OpCase::new(format!("rmsnorm_{s:?}"), [f(s), f(&ch)], |g, v| {
                one(g.rmsnorm(v[0], v[1], 1e-5))
            })
        })
        .collect();
    // Autocast's RMSNorm: f32 operands, the output in the low dtype.
    c.push(OpCase::new(
        "rmsnorm_low_out",
        [f(&[4, 6, 40]), f(&[40])],
        |g, v| {
            let low = g.dtype(v[0]);
            if !matches!(low, DType::F16 | DType::BF16) {
                return one(g.rmsnorm(v[0], v[1], 1e-5));
            }
            let wide = v
                .iter()
                .map(|&x| g.cast(x, DType::F32))
                .collect::<Result<Vec<_>>>()?;
            let op = Op::RmsNorm {
                eps: 1e-5,
                out: Some(low),
            };
            Ok(g.apply(op, &wide)?[..1].to_vec())
        },
    ));
    c
}

/// `(name, qkv shape, query heads, key/value heads, theta)`: multi-head,
/// grouped and multi-query layouts; a small theta turns the slow pairs too.
fn rope() -> Vec<OpCase> {
    [
        ("rope_mha", [1, 6, 24], 1, 1, 10000.0),
        ("rope_gqa", [2, 5, 16], 2, 1, 100.0),
        ("rope_4h2kv", [2, 3, 48], 4, 2, 10000.0),
    ]
    .into_iter()
    .map(|(name, shape, h, k, theta)| {
        OpCase::new(
            name,
            [f(&shape)],
            move |g, v| one(g.rope(v[0], h, k, theta)),
        )
    })
    .collect()
}

fn attention() -> Vec<OpCase> {
    let gqa = [
        ("gqa_4h2kv", [2, 5, 24], 4, 2),
        ("gqa_4h1kv", [1, 6, 24], 4, 1),
        ("mqa_t1", [3, 1, 12], 2, 1),
    ]
    .into_iter()
    .map(|(name, shape, h, k)| {
        OpCase::new(name, [f(&shape)], move |g, v| {
            one(g.gqa_attention(v[0], h, k))
        })
    });
    [
        ("attention_2h", [2, 5, 12], 2),
        ("attention_1h", [1, 4, 9], 1),
        ("attention_t1", [3, 1, 6], 2),
        ("attention_4h", [1, 6, 24], 4),
        ("attn", [2, 7, 24], 2),
        ("attn_1h", [1, 5, 12], 1),
    ]
    .into_iter()
    .map(|(name, shape, heads)| {
        OpCase::new(name, [f(&shape)], move |g, v| one(g.attention(v[0], heads)))
    })
    .chain(gqa)
    // Llama's attention: rotary positions, then grouped-query attention.
    .chain([OpCase::new(
        "rope_gqa_attention",
        [f(&[2, 6, 32])],
        |g, v| {
            let r = g.rope(v[0], 2, 1, 50.0)?;
            one(g.gqa_attention(r, 2, 1))
        },
    )])
    .chain(tensor_core_attention())
    .collect()
}

/// Head sizes of the CUDA tensor-core kernels (kernels/attention_fa.cu: f16
/// and bf16 on sm_80+), T = 70 past one 64-row tile and off the key tiles.
/// The WGSL kernels take heads up to 64.
fn tensor_core_attention() -> Vec<OpCase> {
    [(16, 2), (48, 1), (64, 1), (128, 1)]
        .into_iter()
        .map(|(hd, heads)| {
            let c = OpCase::new(
                format!("attn_hd{hd}"),
                [f(&[1, 70, 3 * hd * heads])],
                move |g, v| one(g.attention(v[0], heads)),
            );
            if hd > 64 {
                c.not_on_wgpu()
            } else {
                c
            }
        })
        .collect()
}

fn softmax() -> Vec<OpCase> {
    vec![
        OpCase::new("softmax", [f(&[3, 7])], |g, v| one(g.softmax(v[0]))),
        OpCase::new("softmax_3d", [f(&[2, 2, 5])], |g, v| one(g.softmax(v[0]))),
        OpCase::new("softmax_4x9", [f(&[4, 9])], |g, v| one(g.softmax(v[0]))).seeded_as("softmax"),
    ]
}

fn cross_entropy() -> Vec<OpCase> {
    vec![
        OpCase::new("ce", [f(&[2, 3, 6]), ids(&[2, 3], 6)], |g, v| {
            one(g.cross_entropy(v[0], v[1]))
        }),
        OpCase::new("ce_2d", [f(&[5, 4]), ids(&[5], 4)], |g, v| {
            one(g.cross_entropy(v[0], v[1]))
        }),
        OpCase::new("ce_3x5x11", [f(&[3, 5, 11]), ids(&[3, 5], 11)], |g, v| {
            one(g.cross_entropy(v[0], v[1]))
        })
        .seeded_as("ce"),
        // A padded vocabulary: 7 classes in rows of 11 logits; the last 4 get
        // no gradient and do not change the loss.
        OpCase::new("ce_padded", [f(&[3, 5, 11]), ids(&[3, 5], 7)], |g, v| {
            one(g.cross_entropy_classes(v[0], v[1], 7))
        }),
        // Classes past the first 256 (a GPU block's threads), padding after.
        OpCase::new("ce_padded_wide", [f(&[2, 300]), ids(&[2], 257)], |g, v| {
            one(g.cross_entropy_classes(v[0], v[1], 257))
        }),
    ]
}

fn views() -> Vec<OpCase> {
    let mut c = vec![
        OpCase::new("reshape", [f(&[2, 6])], |g, v| one(g.reshape(v[0], [3, 4]))),
        OpCase::new("reshape_then_op", [f(&[2, 6])], |g, v| {
            let r = g.reshape(v[0], [3, 4])?;
            one(g.gelu(r))
        }),
        OpCase::new("reshape_gelu", [f(&[2, 6])], |g, v| {
            let r = g.reshape(v[0], [3, 4])?;
            one(g.gelu(r))
        })
        .seeded_as("reshape"),
    ];
    for (a, b) in [(0, 1), (1, 2), (0, 2)] {
        c.push(OpCase::new(
            format!("transpose_{a}{b}"),
            [f(&[2, 3, 4])],
            move |g, v| one(g.transpose(v[0], a, b)),
        ));
    }
    c.extend([
        OpCase::new("transpose", [f(&[2, 3, 4])], |g, v| {
            one(g.transpose(v[0], 0, 2))
        }),
        // A transpose of an axis with itself is a copy.
        OpCase::new("transpose_same", [f(&[3, 4])], |g, v| {
            one(g.transpose(v[0], 1, 1))
        }),
        OpCase::new("split_last", [f(&[2, 6])], |g, v| g.split(v[0], 1, &[2, 4])),
        OpCase::new("split_first_one_used", [f(&[4, 3])], |g, v| {
            Ok(vec![g.split(v[0], 0, &[1, 3])?[1]])
        }),
        OpCase::new("split_middle", [f(&[2, 5, 3])], |g, v| {
            g.split(v[0], 1, &[1, 2, 2])
        }),
        OpCase::new("split", [f(&[4, 6])], |g, v| g.split(v[0], 1, &[2, 4])),
        OpCase::new("split_unused", [f(&[5, 3])], |g, v| {
            Ok(vec![g.split(v[0], 0, &[2, 3])?[0]])
        }),
        OpCase::new("concat", [f(&[2, 3]), f(&[2, 1])], |g, v| {
            one(g.concat(&[v[0], v[1]], 1))
        }),
        OpCase::new("concat_axis0", [f(&[1, 3]), f(&[2, 3])], |g, v| {
            one(g.concat(&[v[0], v[1]], 0))
        }),
        OpCase::new("concat_2x3_2x2", [f(&[2, 3]), f(&[2, 2])], |g, v| {
            one(g.concat(&[v[0], v[1]], 1))
        })
        .seeded_as("concat"),
    ]);
    c
}

fn reductions() -> Vec<OpCase> {
    let mut c = Vec::new();
    for axes in [&[0usize][..], &[1], &[2], &[0, 2], &[0, 1, 2]] {
        let (a1, a2) = (axes.to_vec(), axes.to_vec());
        c.push(OpCase::new(
            format!("sum_{axes:?}"),
            [f(&[2, 3, 4])],
            move |g, v| one(g.sum(v[0], &a1)),
        ));
        c.push(OpCase::new(
            format!("mean_{axes:?}"),
            [f(&[2, 3, 4])],
            move |g, v| one(g.mean(v[0], &a2)),
        ));
    }
    c.extend([
        OpCase::new("sum_mid", [f(&[2, 3, 4])], |g, v| one(g.sum(v[0], &[1]))),
        OpCase::new("mean_outer", [f(&[2, 3, 4])], |g, v| {
            one(g.mean(v[0], &[0, 2]))
        }),
        OpCase::new("expand_lead", [f(&[3])], |g, v| {
            one(g.expand(v[0], &[0], [2, 3]))
        }),
        OpCase::new("expand_mid", [f(&[2, 4])], |g, v| {
            one(g.expand(v[0], &[1], [2, 3, 4]))
        }),
        OpCase::new("expand", [f(&[2, 4])], |g, v| {
            one(g.expand(v[0], &[1], [2, 3, 4]))
        }),
    ]);
    c
}

fn cast() -> Vec<OpCase> {
    vec![
        // Through f32 and back to the operand's dtype (on a backend, f32 → f32
        // or a low dtype → f32 → back). f32 in the middle rounds: a larger step
        // and a looser tolerance than the pure-f64 checks, still far tighter
        // than any wrong gradient.
        OpCase::new("cast", [f(&[3, 4])], |g, v| {
            let back = g.dtype(v[0]);
            let c = g.cast(v[0], DType::F32)?;
            let c = g.gelu(c)?;
            one(g.cast(c, back))
        })
        .fd(1e-2, 1e-4),
    ]
}

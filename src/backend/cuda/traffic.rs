//! What a step costs the GPU's memory system, computed without a GPU: for each
//! op, the kernels the host's own launch plans would launch, and the bytes
//! their loads and stores move to and from global memory, counted from the
//! kernels' code (every pass over a tensor counts; an operand of at most
//! 64 KiB that each row reads again, a bias or a LayerNorm weight, counts once,
//! since it stays in cache). cuBLAS GEMMs count one launch and A + B + C once:
//! a lower bound, cuBLAS's own tiling is not modelled.
//!
//! `examples/kernel_traffic.rs` prints the table for a model and batch.

use super::ops::{
    attention, cast, cross_entropy, elementwise as ew, embedding, layernorm, reduce, rmsnorm, rope,
    shape, softmax,
};
use super::plan::{Arg, Buf, Launch, OpPlan};
use crate::error::Result;
use crate::graph::ops::{storage_dtype, Meta, Op};

/// Launches and global-memory bytes (read + written) of some work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Kernels launched.
    pub launches: u64,
    /// Bytes read plus bytes written.
    pub bytes: u64,
}

impl std::ops::AddAssign for Traffic {
    fn add_assign(&mut self, o: Traffic) {
        self.launches += o.launches;
        self.bytes += o.bytes;
    }
}

/// The plan the backend would run for `op` on tensors of these shapes and
/// dtypes (attention on tensor cores where `tensor_cores` and the shape allow);
/// `None` for ops that launch no kernel of ours (GEMMs, views).
pub fn op_plan(op: &Op, ins: &[Meta], outs: &[Meta], tensor_cores: bool) -> Result<Option<OpPlan>> {
    let (i, o) = (|k: usize| ins[k].0, |k: usize| outs[k].0);
    // Blocks start on 512-byte boundaries and ops take no offset views, so
    // every operand is aligned for the vectorised kernels.
    let dt = storage_dtype(ins.iter().chain(outs).map(|m| m.1));
    let fit = ew::Fit {
        dtype: dt,
        aligned: true,
    };
    Ok(Some(match op {
        Op::MatMul { .. } | Op::Reshape { .. } => return Ok(None),
        Op::Add => ew::plan_add_for(o(0), i(1), (ins[0].1, ins[1].1), fit),
        Op::Mul => ew::plan_mul(o(0), i(1), fit),
        Op::Scale { factor } => ew::plan_scale(o(0), *factor, fit),
        Op::Fill { value, .. } => ew::plan_fill(o(0), *value, fit),
        Op::Gelu => ew::plan_gelu_forward(o(0), fit),
        Op::GeluBackward => ew::plan_gelu_backward(o(0), fit),
        Op::BiasGelu => ew::plan_bias_gelu_forward(o(0), i(1), fit),
        Op::BiasGeluBackward => ew::plan_bias_gelu_backward(o(0), i(1), fit),
        Op::Silu => ew::plan_silu_forward(o(0), fit),
        Op::SiluBackward => ew::plan_silu_backward(o(0), fit),
        Op::Cast { .. } => cast::plan_forward(ins[0].1, o(0))?,
        Op::Embedding => embedding::plan_forward(i(0), i(1)),
        Op::EmbeddingBackward { vocab } => embedding::plan_backward(i(0), i(1), *vocab),
        Op::LayerNorm { eps, .. } => {
            layernorm::plan_for(i(0), *eps, (ins[0].1, outs[0].1), dt, true)
        }
        Op::LayerNormBackward => layernorm::plan_backward_for(i(1), (ins[0].1, ins[1].1), dt, true),
        Op::RmsNorm { eps, .. } => rmsnorm::plan_for(i(0), *eps, (ins[0].1, outs[0].1), dt, true),
        Op::RmsNormBackward => rmsnorm::plan_backward_for(i(1), (ins[0].1, ins[1].1), dt, true),
        Op::Rope {
            n_head,
            n_kv_head,
            theta,
            inverse,
        } => rope::plan_forward(i(0), *n_head, *n_kv_head, *theta, *inverse)?,
        Op::Softmax => softmax::plan_forward(i(0)),
        Op::SoftmaxBackward => softmax::plan_backward(i(0)),
        Op::CrossEntropy { classes } => cross_entropy::plan_forward(i(0), *classes),
        Op::CrossEntropyBackward { classes } => cross_entropy::plan_backward(i(0), *classes),
        Op::CrossEntropyFused { classes } => cross_entropy::plan_fused(i(0), *classes),
        Op::Attention { n_head, n_kv_head } => {
            let (h, k) = (*n_head, *n_kv_head);
            let tc = tensor_cores && attention::tensor_core_shape(ins[0].1, i(0), h, k)?;
            attention::plan_forward(i(0), h, k, tc)?
        }
        Op::AttentionBackward { n_head, n_kv_head } => {
            let (h, k) = (*n_head, *n_kv_head);
            let tc = tensor_cores && attention::tensor_core_shape(ins[0].1, i(0), h, k)?;
            attention::plan_backward(i(0), h, k, tc)?
        }
        Op::Transpose { a, b } => shape::plan_transpose(i(0), *a, *b),
        Op::Split { axis, .. } => {
            let parts: Vec<_> = outs.iter().map(|m| m.0).collect();
            shape::plan_split(i(0), &parts, *axis)
        }
        Op::Concat { axis } => {
            let parts: Vec<_> = ins.iter().map(|m| m.0).collect();
            shape::plan_concat(o(0), &parts, *axis)
        }
        Op::Sum { axes } => reduce::plan_sum(i(0), axes, false, dt, true)?,
        Op::Mean { axes } => reduce::plan_sum(i(0), axes, true, dt, true)?,
        Op::Expand { axes, .. } => reduce::plan_expand(o(0), axes)?,
    }))
}

/// [`op_plan`]'s launches and their bytes; a GEMM is one launch reading A and
/// B and writing C.
pub fn op_traffic(op: &Op, ins: &[Meta], outs: &[Meta], tensor_cores: bool) -> Result<Traffic> {
    let bytes = |m: &Meta| m.0.byte_size(m.1);
    if let Op::MatMul { .. } = op {
        return Ok(Traffic {
            launches: 1,
            bytes: bytes(&ins[0]) + bytes(&ins[1]) + bytes(&outs[0]),
        });
    }
    let Some(plan) = op_plan(op, ins, outs, tensor_cores)? else {
        return Ok(Traffic::default());
    };
    let ws = plan.workspace_bytes.unwrap_or(0);
    let mut t = Traffic::default();
    for l in &plan.launches {
        t.launches += 1;
        t.bytes += launch_bytes(l, ins, outs, ws);
    }
    Ok(t)
}

/// The operands `l` names, each once, in order.
fn operands(l: &Launch) -> Vec<Buf> {
    let mut v: Vec<Buf> = Vec::new();
    for a in &l.args {
        if let Arg::Buf(b) = a {
            if !v.contains(b) {
                v.push(*b);
            }
        }
    }
    v
}

/// Bytes one launch moves, from the kernel's passes over each operand.
pub fn launch_bytes(l: &Launch, ins: &[Meta], outs: &[Meta], workspace: u64) -> u64 {
    let size = |b: Buf| -> f64 {
        (match b {
            Buf::In(k) => ins[k].0.byte_size(ins[k].1),
            Buf::Out(k) => outs[k].0.byte_size(outs[k].1),
            Buf::Workspace => workspace,
            Buf::Table => 8 * l.table.len() as u64,
        }) as f64
    };
    let stem = l.entry.stem();
    // Query (or key) tiles of one (batch, head): the causal average of the
    // other side's tiles each one streams is (tiles + 1) / 2.
    let tiles = l.grid.0 as f64;
    let streamed = (tiles + 1.0) / 2.0;
    // Attention's share of a qkv row that is queries (1/3 for multi-head) and
    // the rest, keys and values; each key/value head is streamed by the
    // `group` query heads that read it (1 for multi-head).
    let (q, kv, group) = attention_split(stem, ins, outs);
    let mut total = 0.0;
    for b in operands(l) {
        let passes = match (stem, b) {
            // Row kernels that loop over the row more than once.
            ("layernorm_forward", Buf::In(0)) => 3.0,
            ("layernorm_backward_dx", Buf::In(0) | Buf::In(1)) => 2.0,
            ("rmsnorm_forward", Buf::In(0)) => 2.0,
            ("rmsnorm_backward_dx", Buf::In(0) | Buf::In(1)) => 2.0,
            ("cross_entropy_rows", Buf::In(0)) => 2.0,
            ("cross_entropy_backward" | "softmax_forward", Buf::In(0)) => 3.0,
            // One read when the row fits the kernel's registers, else two.
            ("cross_entropy_fused", Buf::In(0)) => {
                let classes = match l.args.get(7) {
                    Some(Arg::U64(c)) => *c as usize,
                    _ => usize::MAX,
                };
                if classes <= cross_entropy::FUSED_CACHED_CLASSES {
                    1.0
                } else {
                    2.0
                }
            }
            ("softmax_backward", Buf::In(0) | Buf::In(1)) => 2.0,
            // Read-modify-write.
            ("accumulate" | "accumulate_vec", Buf::Out(0)) => 2.0,
            // Gathers: only the rows the ids pick.
            ("embedding_forward", Buf::In(1)) => {
                total += size(Buf::Out(0));
                continue;
            }
            // Zeroes the table, then adds each token's row of dy into it
            // (a read and a write of a row per token; dy has the table's dtype).
            ("embedding_backward", Buf::Out(0)) => {
                total += size(b) + 2.0 * size(Buf::In(1));
                continue;
            }
            // Attention: q once, k and v streamed by each query head.
            (s, Buf::In(0)) if s.starts_with("attention") && s.contains("forward") => {
                q + kv * group * streamed
            }
            (s, Buf::In(0)) if s.contains("backward_dq") => q + kv * group * streamed,
            // dq writes the query columns of dqkv, dk/dv the rest.
            (s, Buf::Out(0)) if s.contains("backward_dq") => q,
            // dk/dv: k and v once, the query side (q, lse, delta, dout) of
            // the group's heads streamed.
            (s, Buf::In(0)) if s.contains("backward_dkdv") => kv + q * streamed,
            (s, Buf::In(_) | Buf::Workspace) if s.contains("backward_dkdv") => streamed,
            (s, Buf::Out(0)) if s.contains("backward_dkdv") => kv,
            _ => 1.0,
        };
        total += passes * size(b);
    }
    total as u64
}

/// For an attention launch, `(q, kv, group)`: the shares of a qkv row that
/// are queries (H·D of (H + 2K)·D) and keys and values, and H/K. The query
/// width is that of the op's out: the forward's output, the backward's second
/// operand. Other launches get multi-head attention's (1/3, 2/3, 1), unused.
fn attention_split(stem: &str, ins: &[Meta], outs: &[Meta]) -> (f64, f64, f64) {
    let out = if stem.contains("forward") {
        outs.first()
    } else {
        ins.get(1)
    };
    let (Some(qkv), Some(out)) = (ins.first(), out) else {
        return (1.0 / 3.0, 2.0 / 3.0, 1.0);
    };
    let (w, c) = (qkv.0.last() as f64, out.0.last() as f64);
    if !stem.starts_with("attention") || w <= c || c == 0.0 {
        return (1.0 / 3.0, 2.0 / 3.0, 1.0);
    }
    // W = (H + 2K)·D and C = H·D, so H/K = 2C / (W − C).
    (c / w, (w - c) / w, 2.0 * c / (w - c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DType, Shape};

    #[test]
    fn bytes_follow_the_kernels_passes() {
        let (x, bias) = (Shape::new(&[64, 768]), Shape::new(&[768]));
        let bf = DType::BF16;
        // add: a and out once; the bias once (it stays in cache).
        let t = op_traffic(&Op::Add, &[(&x, bf), (&bias, bf)], &[(&x, bf)], true).unwrap();
        assert_eq!(
            t,
            Traffic {
                launches: 1,
                bytes: (2 * 64 * 768 + 768) * 2
            }
        );
        // A GEMM: one launch, A + B + C.
        let (a, w, c) = (
            Shape::new(&[64, 768]),
            Shape::new(&[768, 256]),
            Shape::new(&[64, 256]),
        );
        let mm = Op::MatMul {
            ta: false,
            tb: false,
        };
        let t = op_traffic(&mm, &[(&a, bf), (&w, bf)], &[(&c, bf)], true).unwrap();
        assert_eq!(t.launches, 1);
        assert_eq!(t.bytes, 2 * (64 * 768 + 768 * 256 + 64 * 256));
        // Cross-entropy today: row statistics read the logits twice, then the
        // loss of each row goes to the workspace and is averaged.
        let (logits, ids, loss) = (Shape::new(&[64, 1000]), Shape::new(&[64]), Shape::scalar());
        let ins = [(&logits, bf), (&ids, DType::I32)];
        let ce = Op::CrossEntropy { classes: 1000 };
        let t = op_traffic(&ce, &ins, &[(&loss, DType::F32)], true).unwrap();
        let rows = 2 * (64 * 1000 * 2) + 64 * 4 + 64 * 4;
        let mean = 64 * 4 + 4;
        assert_eq!(
            t,
            Traffic {
                launches: 2,
                bytes: rows + mean
            }
        );
        // The Llama ops: SiLU and RoPE pass over their operands once; the
        // RMSNorm row groups read x once, write y and rstd.
        let silu = op_traffic(&Op::Silu, &[(&x, bf)], &[(&x, bf)], true).unwrap();
        assert_eq!(silu.bytes, 2 * 64 * 768 * 2);
        let qkv = Shape::new(&[2, 64, 6 * 64]);
        let rope = Op::Rope {
            n_head: 4,
            n_kv_head: 1,
            theta: 1e4,
            inverse: false,
        };
        let t = op_traffic(&rope, &[(&qkv, bf)], &[(&qkv, bf)], true).unwrap();
        assert_eq!(t.bytes, 2 * qkv.byte_size(bf));
        let (rows, f) = (Shape::new(&[64]), DType::F32);
        let rms = Op::RmsNorm {
            eps: 1e-5,
            out: None,
        };
        let t = op_traffic(
            &rms,
            &[(&x, bf), (&bias, bf)],
            &[(&x, bf), (&rows, f)],
            true,
        )
        .unwrap();
        assert_eq!(t.bytes, 2 * 64 * 768 * 2 + 768 * 2 + 64 * 4);
        // Grouped-query attention: one key/value head for four query heads
        // streams the same keys four times over, from a narrower row.
        let (out, lse) = (Shape::new(&[2, 64, 4 * 64]), Shape::new(&[2, 4, 64]));
        let att = |k| Op::Attention {
            n_head: 4,
            n_kv_head: k,
        };
        let mha_qkv = Shape::new(&[2, 64, 12 * 64]);
        let outs = [(&out, bf), (&lse, f)];
        let gqa = op_traffic(&att(1), &[(&qkv, bf)], &outs, false).unwrap();
        let mha = op_traffic(&att(4), &[(&mha_qkv, bf)], &outs, false).unwrap();
        // One 64-row tile: q once and k, v once each, the same for both.
        assert_eq!(gqa.bytes, mha.bytes);
        // Views launch nothing.
        let r = Op::Reshape {
            shape: Shape::new(&[64 * 768]),
        };
        let flat = Shape::new(&[64 * 768]);
        assert_eq!(
            op_traffic(&r, &[(&x, bf)], &[(&flat, bf)], true).unwrap(),
            Traffic::default()
        );
    }
}

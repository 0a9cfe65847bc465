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
    attention, cast, cross_entropy, elementwise as ew, embedding, layernorm, reduce, shape, softmax,
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
        Op::Cast { .. } => cast::plan_forward(ins[0].1, o(0))?,
        Op::Embedding => embedding::plan_forward(i(0), i(1)),
        Op::EmbeddingBackward { vocab } => embedding::plan_backward(i(0), i(1), *vocab),
        Op::LayerNorm { eps, .. } => {
            layernorm::plan_for(i(0), *eps, (ins[0].1, outs[0].1), dt, true)
        }
        Op::LayerNormBackward => layernorm::plan_backward_for(i(1), (ins[0].1, ins[1].1), dt, true),
        Op::Softmax => softmax::plan_forward(i(0)),
        Op::SoftmaxBackward => softmax::plan_backward(i(0)),
        Op::CrossEntropy { classes } => cross_entropy::plan_forward(i(0), *classes),
        Op::CrossEntropyBackward { classes } => cross_entropy::plan_backward(i(0), *classes),
        Op::CrossEntropyFused { classes } => cross_entropy::plan_fused(i(0), *classes),
        Op::Attention { n_head, .. } => {
            let tc = tensor_cores && attention::tensor_core_shape(ins[0].1, i(0), *n_head)?;
            attention::plan_forward(i(0), *n_head, tc)?
        }
        Op::AttentionBackward { n_head, .. } => {
            let tc = tensor_cores && attention::tensor_core_shape(ins[0].1, i(0), *n_head)?;
            attention::plan_backward(i(0), *n_head, tc)?
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
        Op::RmsNorm { .. }
        | Op::RmsNormBackward
        | Op::Silu
        | Op::SiluBackward
        | Op::Rope { .. } => {
            return Err(crate::error::Error::Unsupported {
                backend: "cuda",
                what: format!("the launch plan of {}", op.name()),
                hint: "train Llama models on the cpu backend for now",
            })
        }
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
    let mut total = 0.0;
    for b in operands(l) {
        let passes = match (stem, b) {
            // Row kernels that loop over the row more than once.
            ("layernorm_forward", Buf::In(0)) => 3.0,
            ("layernorm_backward_dx", Buf::In(0) | Buf::In(1)) => 2.0,
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
            // Attention: q (a third of qkv) once, k and v streamed.
            (s, Buf::In(0)) if s.starts_with("attention") && s.contains("forward") => {
                1.0 / 3.0 + 2.0 / 3.0 * streamed
            }
            (s, Buf::In(0)) if s.contains("backward_dq") => 1.0 / 3.0 + 2.0 / 3.0 * streamed,
            // dq writes a third of dqkv, dk/dv two thirds.
            (s, Buf::Out(0)) if s.contains("backward_dq") => 1.0 / 3.0,
            // dk/dv: k and v once, the query side (q, lse, delta, dout) streamed.
            (s, Buf::In(0)) if s.contains("backward_dkdv") => 2.0 / 3.0 + 1.0 / 3.0 * streamed,
            (s, Buf::In(_) | Buf::Workspace) if s.contains("backward_dkdv") => streamed,
            (s, Buf::Out(0)) if s.contains("backward_dkdv") => 2.0 / 3.0,
            _ => 1.0,
        };
        total += passes * size(b);
    }
    total as u64
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

//! Reverse-mode autodiff as a graph transform: the forward graph is extended with
//! gradient nodes (phase `Backward`), one vector-Jacobian rule per op.

use std::collections::HashMap;

use super::{Graph, Phase, Value};
use crate::error::{Error, Result};

/// Records the backward pass of `loss` (a scalar) into `g` and returns the gradient
/// value of each of `wrt`, in order. A parameter the loss does not depend on gets
/// a zero gradient.
pub fn backward(g: &mut Graph, loss: Value, wrt: &[Value]) -> Result<Vec<Value>> {
    backward_seeded(g, loss, wrt, 1.0)
}

/// [`backward`] of `seed × loss`: a micro-batch's share of a batch's mean loss.
pub fn backward_seeded(g: &mut Graph, loss: Value, wrt: &[Value], seed: f64) -> Result<Vec<Value>> {
    let (shape, dt) = (g.shape(loss).clone(), g.dtype(loss));
    g.set_phase(Phase::Backward);
    let s = g.fill(seed, shape, dt)?;
    backward_from(g, loss, wrt, s)
}

/// [`backward`] starting from the gradient value `seed` (the same shape and
/// dtype as `loss`), such as an input the caller sets per run.
pub fn backward_from(g: &mut Graph, loss: Value, wrt: &[Value], seed: Value) -> Result<Vec<Value>> {
    if g.shape(seed) != g.shape(loss) || g.dtype(seed) != g.dtype(loss) {
        return Err(Error::shape(
            "backward",
            format!(
                "seed {} {} must match the loss {} {}",
                g.shape(seed),
                g.dtype(seed),
                g.shape(loss),
                g.dtype(loss)
            ),
        ));
    }
    if g.shape(loss).numel() != 1 {
        return Err(Error::shape(
            "backward",
            format!("the loss must be a scalar, got {}", g.shape(loss)),
        ));
    }
    backward_from_grads(g, &[(loss, seed)], wrt)
}

/// The backward pass from gradients already computed for forward values:
/// `(value, its gradient)` pairs of one shape and dtype each, such as the
/// logits and the dlogits of [`Op::CrossEntropyFused`](super::Op::CrossEntropyFused),
/// which computes the loss and its gradient in one node.
pub fn backward_from_grads(
    g: &mut Graph,
    seeds: &[(Value, Value)],
    wrt: &[Value],
) -> Result<Vec<Value>> {
    for &(v, d) in seeds {
        if g.shape(v) != g.shape(d) || g.dtype(v) != g.dtype(d) {
            return Err(Error::shape(
                "backward",
                format!(
                    "gradient {} {} must match its value {} {}",
                    g.shape(d),
                    g.dtype(d),
                    g.shape(v),
                    g.dtype(v)
                ),
            ));
        }
    }
    let forward_nodes = g.nodes().len();

    // A value needs a gradient when it is one of `wrt` or computed from one.
    let mut needs = vec![false; g.num_values()];
    for &p in wrt {
        needs[p.index()] = true;
    }
    for n in &g.nodes()[..forward_nodes] {
        let any = n
            .inputs
            .iter()
            .enumerate()
            .any(|(i, v)| needs[v.index()] && n.op.differentiable_input(i));
        if any {
            for o in &n.outputs {
                needs[o.index()] = true;
            }
        }
    }

    g.set_phase(Phase::Backward);
    let saved_block = g.block;
    let mut grads: HashMap<Value, Value> = seeds.iter().copied().collect();

    for ni in (0..forward_nodes).rev() {
        let node = g.nodes()[ni].clone();
        let douts: Vec<Option<Value>> =
            node.outputs.iter().map(|o| grads.get(o).copied()).collect();
        if douts.iter().all(Option::is_none) {
            continue;
        }
        let wanted: Vec<bool> = node
            .inputs
            .iter()
            .enumerate()
            .map(|(i, v)| needs[v.index()] && node.op.differentiable_input(i))
            .collect();
        if !wanted.iter().any(|&w| w) {
            continue;
        }
        // Gradient nodes inherit the block of the forward node they differentiate.
        g.set_block(node.block);
        let dins = node.op.vjp(g, &node.inputs, &node.outputs, &douts)?;
        for ((&inp, d), want) in node.inputs.iter().zip(dins).zip(wanted) {
            let Some(d) = d else { continue };
            if !want {
                continue;
            }
            let acc = match grads.get(&inp) {
                Some(&prev) => g.add(prev, d)?,
                None => d,
            };
            grads.insert(inp, acc);
        }
    }
    g.set_block(saved_block);

    // Each gradient is handed to the caller as its own tensor: where two
    // parameters got the very same value (a + b), or a gradient is a view, copy it.
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(wrt.len());
    for p in wrt {
        let d = match grads.get(p) {
            Some(&d) => {
                let is_view = g.producer(d).is_some_and(|n| g.node(n).op.is_alias());
                if is_view || !seen.insert(d) {
                    g.scale(d, 1.0)?
                } else {
                    d
                }
            }
            None => {
                let (s, dt) = (g.shape(*p).clone(), g.dtype(*p));
                g.fill(0.0, s, dt)?
            }
        };
        out.push(d);
    }
    g.set_phase(Phase::Forward);
    Ok(out)
}

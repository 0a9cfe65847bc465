//! A program: the graph lowered to a straight list of instructions. Each tensor is
//! freed right after its last use, so the program alone fixes the memory profile
//! of a step (which is what the planner simulates).

use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Value, ValueKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instr {
    /// Allocate the node's outputs and run its op.
    Run(NodeId),
    /// Give a tensor's memory back (its storage root; views share it).
    Free(Value),
}

#[derive(Clone, Debug)]
pub struct Program {
    pub instrs: Vec<Instr>,
    /// Values the caller receives (and must free).
    pub outputs: Vec<Value>,
    /// For each value, the value that owns its memory (itself, or what it views).
    pub root: Vec<Value>,
}

/// Lowers the part of `g` that `outputs` depend on. Parameters and inputs are bound
/// by the caller and never freed by the program.
pub fn lower(g: &Graph, outputs: &[Value]) -> Result<Program> {
    let nv = g.num_values();
    // Storage roots: a view's memory belongs to the value it views.
    let mut root: Vec<Value> = (0..nv as u32).map(Value).collect();
    for n in g.nodes() {
        if n.op.is_alias() {
            root[n.outputs[0].index()] = root[n.inputs[0].index()];
        }
    }

    // Only nodes that outputs depend on run.
    let mut live_node = vec![false; g.nodes().len()];
    let mut want = vec![false; nv];
    for &o in outputs {
        want[o.index()] = true;
    }
    for (i, n) in g.nodes().iter().enumerate().rev() {
        if n.outputs.iter().any(|o| want[o.index()]) {
            live_node[i] = true;
            for v in &n.inputs {
                want[v.index()] = true;
            }
        }
    }

    let mut kept = vec![false; nv];
    for &o in outputs {
        let r = root[o.index()];
        if kept[r.index()] && r != o {
            return Err(Error::Internal(format!(
                "two program outputs share the memory of value {}",
                r.0
            )));
        }
        kept[r.index()] = true;
    }
    let external = |v: Value| !matches!(g.info(v).kind, ValueKind::Computed { .. });

    // Last instruction (node position) that reads each storage root.
    let order: Vec<usize> = (0..g.nodes().len()).filter(|&i| live_node[i]).collect();
    let mut last_use: Vec<Option<usize>> = vec![None; nv];
    for (pos, &ni) in order.iter().enumerate() {
        for v in &g.nodes()[ni].inputs {
            last_use[root[v.index()].index()] = Some(pos);
        }
    }

    let mut instrs = Vec::with_capacity(order.len() * 2);
    let mut frees_after: Vec<Vec<Value>> = vec![Vec::new(); order.len()];
    for (pos, &ni) in order.iter().enumerate() {
        let n = &g.nodes()[ni];
        for &o in &n.outputs {
            let r = root[o.index()];
            if r != o || kept[o.index()] || external(o) {
                continue;
            }
            // An output nobody reads is freed as soon as its node has run.
            let at = last_use[o.index()].unwrap_or(pos).max(pos);
            frees_after[at].push(o);
        }
    }
    for (pos, &ni) in order.iter().enumerate() {
        instrs.push(Instr::Run(NodeId(ni as u32)));
        for &v in &frees_after[pos] {
            instrs.push(Instr::Free(v));
        }
    }
    Ok(Program {
        instrs,
        outputs: outputs.to_vec(),
        root,
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DType;

    fn pos(p: &Program, i: Instr) -> usize {
        p.instrs
            .iter()
            .position(|&x| x == i)
            .expect("instruction present")
    }

    #[test]
    fn frees_each_tensor_right_after_its_last_use() {
        let mut g = Graph::new();
        let x = g.input("x", [4, 8], DType::F32).unwrap();
        let a = g.gelu(x).unwrap(); // used by b and c
        let b = g.scale(a, 2.0).unwrap(); // used by c
        let c = g.add(a, b).unwrap();
        let p = lower(&g, &[c]).unwrap();
        let run_c = pos(&p, Instr::Run(NodeId(2)));
        assert!(pos(&p, Instr::Free(a)) > run_c);
        assert!(pos(&p, Instr::Free(b)) > run_c);
        // Inputs and outputs belong to the caller.
        assert!(!p.instrs.contains(&Instr::Free(x)));
        assert!(!p.instrs.contains(&Instr::Free(c)));
    }

    #[test]
    fn runs_only_what_the_outputs_need() {
        let mut g = Graph::new();
        let x = g.input("x", [4], DType::F32).unwrap();
        let used = g.gelu(x).unwrap();
        let _dead = g.scale(x, 3.0).unwrap();
        let p = lower(&g, &[used]).unwrap();
        assert_eq!(p.instrs, vec![Instr::Run(NodeId(0))]);
    }

    #[test]
    fn a_view_keeps_its_storage_alive() {
        let mut g = Graph::new();
        let x = g.input("x", [2, 6], DType::F32).unwrap();
        let a = g.gelu(x).unwrap();
        let v = g.reshape(a, [3, 4]).unwrap(); // a view of a
        let y = g.scale(v, 2.0).unwrap();
        let p = lower(&g, &[y]).unwrap();
        assert_eq!(p.root[v.index()], a);
        // a is freed after its view's last reader, and the view itself never is.
        assert!(pos(&p, Instr::Free(a)) > pos(&p, Instr::Run(NodeId(2))));
        assert!(!p.instrs.contains(&Instr::Free(v)));
    }

    #[test]
    fn unread_extra_outputs_are_freed_at_once() {
        let mut g = Graph::new();
        let x = g.input("x", [2, 4], DType::F32).unwrap();
        let w = g.param("w", [4], DType::F32).unwrap();
        let b = g.param("b", [4], DType::F32).unwrap();
        let y = g.layernorm(x, w, b, 1e-5).unwrap();
        let out = g.gelu(y).unwrap();
        let p = lower(&g, &[out]).unwrap();
        let stats = &g.node(NodeId(0)).outputs[1..];
        for &s in stats {
            assert!(
                pos(&p, Instr::Free(s)) < pos(&p, Instr::Run(NodeId(1))),
                "saved stats are freed before the next node runs"
            );
        }
    }
}

//! A program: the graph lowered to a straight list of instructions. Each tensor is
//! freed right after its last use, activations the recompute policy drops are
//! computed again just before the backward pass reads them, and gradients can be
//! accumulated into caller buffers as soon as they are final. The program alone
//! fixes the memory profile of a step, which is what the planner simulates.

use std::collections::{HashMap, HashSet};

use super::recompute::{kept_values, offloaded_values, saved_values, Recompute};
use crate::error::{Error, Result};
use crate::graph::{Graph, NodeId, Phase, Value, ValueKind};

/// One instruction of a [`Program`]; the executor runs them in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instr {
    /// Allocate the node's outputs and run its op.
    Run(NodeId),
    /// Run a forward node again for the backward pass (its outputs were dropped).
    Recompute(NodeId),
    /// Add the value into the caller's accumulator `slot` (then it is freed).
    Accumulate {
        /// The value to add: a computed value that is its own storage root
        /// (lowering refuses views, outputs and inputs).
        value: Value,
        /// Index of the accumulator: `value`'s position in
        /// [`LowerOptions::accumulate`].
        slot: usize,
    },
    /// Give a tensor's memory back (its storage root; views share it).
    Free(Value),
    /// Copy a kept activation (a storage root) to the host pool and free its
    /// device memory (activation offload).
    Offload(Value),
    /// Bring an offloaded activation back into device memory.
    Fetch(Value),
}

/// What [`lower_with`] does beyond [`lower`]: a recompute policy and
/// accumulation of gradients into caller buffers.
#[derive(Clone, Debug, Default)]
pub struct LowerOptions {
    /// The recompute policy; `None` keeps every saved activation, as
    /// [`Recompute::None`] does.
    pub recompute: Option<Recompute>,
    /// Values to add into caller-provided accumulators (slot = index here)
    /// instead of returning them: gradients of later micro-batches.
    pub accumulate: Vec<Value>,
    /// Values that are gradients (returned or accumulated), for memory tags.
    pub gradients: Vec<Value>,
    /// Per accumulator slot, values that must all have been read before the
    /// slot's `Accumulate` runs: under gradient release the accumulate
    /// updates a parameter, which no later node may then read (the
    /// parameter itself, its casts, their views).
    pub hold: Vec<Vec<Value>>,
}

/// A graph lowered for one run: the instructions, and what the executor needs
/// to know about the values they touch.
#[derive(Clone, Debug)]
pub struct Program {
    /// The instructions, in execution order.
    pub instrs: Vec<Instr>,
    /// Values the caller receives (and must free).
    pub outputs: Vec<Value>,
    /// For each value, the value that owns its memory (itself, or what it views).
    pub root: Vec<Value>,
    /// Floating-point operations of one run, recompute included.
    pub flops: u64,
    /// Nodes run again by recompute.
    pub recomputed: usize,
    /// Values that are gradients ([`LowerOptions::gradients`]); the executor
    /// tags their memory [`TensorKind::Gradient`](crate::memory::TensorKind::Gradient).
    pub gradients: HashSet<Value>,
}

/// Lowers the part of `g` that `outputs` depend on, keeping every activation.
pub fn lower(g: &Graph, outputs: &[Value]) -> Result<Program> {
    lower_with(g, outputs, &LowerOptions::default())
}

/// Lowers with a recompute policy and gradient accumulation. Parameters and
/// inputs are bound by the caller and never freed by the program.
pub fn lower_with(g: &Graph, outputs: &[Value], opts: &LowerOptions) -> Result<Program> {
    let nv = g.num_values();
    // Storage roots: a view's memory belongs to the value it views.
    let mut root: Vec<Value> = (0..nv as u32).map(Value).collect();
    for n in g.nodes() {
        if n.op.is_alias() {
            root[n.outputs[0].index()] = root[n.inputs[0].index()];
        }
    }
    let external = |v: Value| !matches!(g.info(v).kind, ValueKind::Computed { .. });

    // Only nodes that outputs (and accumulated values) depend on run.
    let mut live_node = vec![false; g.nodes().len()];
    let mut want = vec![false; nv];
    for &o in outputs.iter().chain(&opts.accumulate) {
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

    let mut forever = vec![false; nv]; // output roots: never freed
    for &o in outputs {
        let r = root[o.index()];
        if forever[r.index()] && r != o {
            return Err(Error::Internal(format!(
                "two program outputs share the memory of value {}",
                r.0
            )));
        }
        forever[r.index()] = true;
    }
    let slot_of: HashMap<Value, usize> = opts
        .accumulate
        .iter()
        .enumerate()
        .map(|(i, &v)| (v, i))
        .collect();
    for &v in &opts.accumulate {
        if root[v.index()] != v || forever[v.index()] || external(v) {
            return Err(Error::Internal(format!(
                "value {} cannot be accumulated (a view, an output or an input)",
                v.0
            )));
        }
    }

    // Which saved activations stay in memory.
    let saved = saved_values(g, &root, &live_node);
    let (mut dropped, mut offloaded): (HashSet<Value>, HashSet<Value>) = match opts.recompute {
        Some(p) => {
            let kept = kept_values(g, &root, &saved, p);
            let off = offloaded_values(g, &kept, p);
            (saved.difference(&kept).copied().collect(), off)
        }
        None => (HashSet::new(), HashSet::new()),
    };
    offloaded.retain(|v| !forever[v.index()]);
    dropped.retain(|v| !forever[v.index()]);

    // Step 1: the sequence of node runs, recomputes inserted where needed. When
    // the backward pass starts, only kept saved activations and outputs are
    // still in memory; everything else of the forward pass was freed.
    let resident: Vec<bool> = (0..nv)
        .map(|i| {
            let r = root[i];
            forever[r.index()] || (saved.contains(&r) && !dropped.contains(&r))
        })
        .collect();
    let seq = sequence(g, &root, &live_node, &resident);

    // Step 2: liveness over the sequence (a recompute redefines a value): each
    // definition's storage is freed after its last use before the next one.
    let mut frees_after: Vec<Vec<Value>> = vec![Vec::new(); seq.len()];
    let mut live: HashSet<Value> = HashSet::new();
    for (i, &(ni, _)) in seq.iter().enumerate().rev() {
        let n = g.node(ni);
        if !n.op.is_alias() {
            for &o in &n.outputs {
                if forever[o.index()] {
                    continue;
                }
                if !live.remove(&o) {
                    frees_after[i].push(o); // dead on arrival
                }
            }
        }
        for &u in &n.inputs {
            let r = root[u.index()];
            if external(r) || forever[r.index()] {
                continue;
            }
            if live.insert(r) {
                frees_after[i].push(r);
            }
        }
    }

    let mut instrs = Vec::with_capacity(seq.len() * 2);
    let mut flops = 0u64;
    let mut recomputed = 0;
    for (i, &(ni, again)) in seq.iter().enumerate() {
        let n = g.node(ni);
        instrs.push(if again {
            recomputed += 1;
            Instr::Recompute(ni)
        } else {
            Instr::Run(ni)
        });
        let ins: Vec<&crate::tensor::Shape> = n.inputs.iter().map(|&v| g.shape(v)).collect();
        let outs: Vec<&crate::tensor::Shape> = n.outputs.iter().map(|&v| g.shape(v)).collect();
        if !n.op.is_alias() {
            flops += n.op.flops(&ins, &outs);
        }
        for &v in &frees_after[i] {
            if let Some(&slot) = slot_of.get(&v) {
                instrs.push(Instr::Accumulate { value: v, slot });
            }
            instrs.push(Instr::Free(v));
        }
    }
    if !offloaded.is_empty() {
        instrs = insert_offloads(g, &root, instrs, &offloaded);
    }
    if !opts.hold.is_empty() {
        instrs = hold_accumulates(g, &root, instrs, &opts.hold);
    }
    Ok(Program {
        instrs,
        outputs: outputs.to_vec(),
        root,
        flops,
        recomputed,
        gradients: opts.gradients.iter().copied().collect(),
    })
}

/// `instrs` with an `Offload` of each of `offloaded` after its last reader
/// before the backward pass, and a `Fetch` just before its first reader in it.
fn insert_offloads(
    g: &Graph,
    root: &[Value],
    instrs: Vec<Instr>,
    offloaded: &HashSet<Value>,
) -> Vec<Instr> {
    let node_of = |x: &Instr| match *x {
        Instr::Run(ni) | Instr::Recompute(ni) => Some(ni),
        _ => None,
    };
    let backward_from = instrs
        .iter()
        .position(|x| {
            matches!(x, Instr::Recompute(_))
                || node_of(x).is_some_and(|ni| g.node(ni).phase == Phase::Backward)
        })
        .unwrap_or(instrs.len());
    let reads = |x: &Instr, v: Value| {
        node_of(x).is_some_and(|ni| g.node(ni).inputs.iter().any(|&u| root[u.index()] == v))
    };
    let defines =
        |x: &Instr, v: Value| node_of(x).is_some_and(|ni| g.node(ni).outputs.contains(&v));
    let mut after: HashMap<usize, Vec<Instr>> = HashMap::new();
    let mut before: HashMap<usize, Vec<Instr>> = HashMap::new();
    let mut order: Vec<Value> = offloaded.iter().copied().collect();
    order.sort_by_key(|v| v.0);
    for v in order {
        let Some(def) = instrs[..backward_from].iter().position(|x| defines(x, v)) else {
            continue;
        };
        let Some(first) = (backward_from..instrs.len()).find(|&i| reads(&instrs[i], v)) else {
            continue;
        };
        let last = (def..backward_from)
            .filter(|&i| reads(&instrs[i], v))
            .max()
            .unwrap_or(def);
        after.entry(last).or_default().push(Instr::Offload(v));
        before.entry(first).or_default().push(Instr::Fetch(v));
    }
    let mut out = Vec::with_capacity(instrs.len() + 2 * offloaded.len());
    for (i, x) in instrs.into_iter().enumerate() {
        out.extend(before.remove(&i).unwrap_or_default());
        out.push(x);
        out.extend(after.remove(&i).unwrap_or_default());
    }
    out
}

/// `instrs` with each `Accumulate` of slot `k` (and the `Free` after it)
/// moved to just after the last node that reads a value whose storage is one
/// of `hold[k]`'s, where that node comes later.
fn hold_accumulates(
    g: &Graph,
    root: &[Value],
    instrs: Vec<Instr>,
    hold: &[Vec<Value>],
) -> Vec<Instr> {
    let mut held: HashMap<Value, Vec<usize>> = HashMap::new();
    for (k, vs) in hold.iter().enumerate() {
        for &v in vs {
            held.entry(root[v.index()]).or_default().push(k);
        }
    }
    let mut last_read = vec![0usize; hold.len()];
    for (i, x) in instrs.iter().enumerate() {
        if let Instr::Run(ni) | Instr::Recompute(ni) = x {
            for &u in &g.node(*ni).inputs {
                for &k in held.get(&root[u.index()]).into_iter().flatten() {
                    last_read[k] = i;
                }
            }
        }
    }
    let mut out = Vec::with_capacity(instrs.len());
    let mut deferred: Vec<(usize, Instr, Option<Instr>)> = Vec::new();
    let mut i = 0;
    while i < instrs.len() {
        let x = instrs[i];
        if let Instr::Accumulate { value, slot } = x {
            let free =
                (instrs.get(i + 1) == Some(&Instr::Free(value))).then_some(Instr::Free(value));
            let skip = 1 + free.is_some() as usize;
            if slot < last_read.len() && last_read[slot] > i {
                deferred.push((last_read[slot], x, free));
                i += skip;
                continue;
            }
        }
        out.push(x);
        // Deferred accumulates go right after their last reader (before its frees).
        let (due, rest): (Vec<_>, Vec<_>) = deferred.drain(..).partition(|d| d.0 == i);
        deferred = rest;
        for (_, a, f) in due {
            out.push(a);
            out.extend(f);
        }
        i += 1;
    }
    out
}

/// Node runs in order: every live node once, and before a backward node, the
/// recompute of whatever dropped activation it reads that is not in memory
/// (recursively, from the nearest values that are).
fn sequence(g: &Graph, root: &[Value], live: &[bool], resident: &[bool]) -> Vec<(NodeId, bool)> {
    let mut seq = Vec::new();
    // A value is "present" when its storage holds its current definition. For a
    // view, that means its root has not been redefined since the view was made.
    let mut gen = vec![0u32; g.num_values()]; // definitions of each root so far
    let mut view_gen = vec![0u32; g.num_values()];
    let mut present = vec![false; g.num_values()];
    let in_backward = |ni: usize| g.nodes()[ni].phase == Phase::Backward;

    fn define(
        g: &Graph,
        ni: NodeId,
        root: &[Value],
        gen: &mut [u32],
        view_gen: &mut [u32],
        present: &mut [bool],
    ) {
        let n = g.node(ni);
        for &o in &n.outputs {
            if n.op.is_alias() {
                view_gen[o.index()] = gen[root[o.index()].index()];
            } else {
                gen[o.index()] += 1;
            }
            present[o.index()] = true;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ensure(
        g: &Graph,
        v: Value,
        root: &[Value],
        gen: &mut [u32],
        view_gen: &mut [u32],
        present: &mut [bool],
        seq: &mut Vec<(NodeId, bool)>,
    ) {
        let Some(p) = g.producer(v) else { return }; // parameters and inputs
        let node = g.node(p);
        let ok = if node.op.is_alias() {
            present[v.index()]
                && view_gen[v.index()] == gen[root[v.index()].index()]
                && present[root[v.index()].index()]
        } else {
            present[v.index()]
        };
        if ok {
            return;
        }
        for &u in &node.inputs {
            ensure(g, u, root, gen, view_gen, present, seq);
        }
        seq.push((p, true));
        define(g, p, root, gen, view_gen, present);
    }

    let mut backward_started = false;
    for (i, n) in g.nodes().iter().enumerate() {
        if !live[i] {
            continue;
        }
        let ni = NodeId(i as u32);
        if in_backward(i) && !backward_started {
            backward_started = true;
            // From here on, only resident forward values are in memory (the
            // liveness pass frees the rest after their last forward reader).
            for (v, p) in present.iter_mut().enumerate() {
                let fwd = g.producer(Value(v as u32)).is_some();
                if fwd && !resident[v] {
                    *p = false;
                }
            }
        }
        if backward_started {
            for &u in &n.inputs {
                ensure(g, u, root, &mut gen, &mut view_gen, &mut present, &mut seq);
            }
        }
        seq.push((ni, false));
        define(g, ni, root, &mut gen, &mut view_gen, &mut present);
    }
    seq
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

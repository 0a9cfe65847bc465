//! Runs a program on a device. Every tensor is allocated here, just before the node
//! that computes it, and freed where the program says; on any error all memory the
//! run took is given back before the error is returned.

use std::collections::HashMap;

use super::program::{Instr, Program};
use crate::backend::profile::Span;
use crate::backend::{Device, DeviceTensor, TensorRef};
use crate::error::{Error, Result};
use crate::graph::{Graph, Phase, Value, ValueKind};
use crate::memory::{MemPhase, Tag, TensorKind};

/// Device tensors for the graph's parameters and inputs.
pub type Bindings<'a> = HashMap<Value, &'a TensorRef>;

struct Slot {
    r: TensorRef,
    owned: bool,
}

/// Whether a program trains (its memory is tagged forward/backward) or only
/// evaluates (tagged eval).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Memory tagged [`MemPhase::Forward`], [`MemPhase::Backward`] or
    /// [`MemPhase::Recompute`], by node.
    Train,
    /// All memory tagged [`MemPhase::Eval`].
    Eval,
}

/// Runs `p` and returns its outputs, in order; the caller frees them.
pub fn execute(
    dev: &mut Device,
    g: &Graph,
    p: &Program,
    bind: &Bindings,
    mode: Mode,
) -> Result<Vec<DeviceTensor>> {
    execute_into(dev, g, p, bind, mode, &[])
}

/// What an `Accumulate` instruction does with its value.
pub enum Sink<'a> {
    /// Adds it into the caller's tensor of its slot (gradient accumulation).
    Add(&'a [&'a TensorRef]),
    /// Hands it to the caller with its slot, before it is freed (gradient
    /// release: the caller updates the slot's parameter with it).
    Apply(&'a mut dyn FnMut(&mut Device, usize, &TensorRef) -> Result<()>),
}

/// Like [`execute`], adding each `Accumulate` value into `sinks[slot]`.
pub fn execute_into(
    dev: &mut Device,
    g: &Graph,
    p: &Program,
    bind: &Bindings,
    mode: Mode,
    sinks: &[&TensorRef],
) -> Result<Vec<DeviceTensor>> {
    execute_with(dev, g, p, bind, mode, Sink::Add(sinks))
}

/// Like [`execute`], each `Accumulate` value going to `sink`.
pub fn execute_with(
    dev: &mut Device,
    g: &Graph,
    p: &Program,
    bind: &Bindings,
    mode: Mode,
    mut sink: Sink<'_>,
) -> Result<Vec<DeviceTensor>> {
    let mut slots: Vec<Option<Slot>> = (0..g.num_values()).map(|_| None).collect();
    let mut away = HashMap::new();
    let ran = run(dev, g, p, bind, mode, &mut sink, &mut slots, &mut away);
    // Activations still in the host pool (an error between offload and fetch).
    for (_, (h, _)) in away.drain() {
        dev.host_free(h);
    }
    match ran {
        Ok(()) => {
            let mut outs = Vec::with_capacity(p.outputs.len());
            for &o in &p.outputs {
                let root = p.root[o.index()];
                let owned = slots[root.index()].as_ref().is_some_and(|s| s.owned);
                let slot = slots[o.index()].take();
                match (slot, owned) {
                    (Some(s), true) => {
                        // Ownership moves from the storage root to the output.
                        if let Some(rs) = slots[root.index()].as_mut() {
                            rs.owned = false;
                        }
                        outs.push(dev.adopt(s.r));
                    }
                    _ => {
                        release(dev, &mut slots);
                        for t in outs {
                            dev.free(t);
                        }
                        return Err(Error::Internal(format!(
                            "program output {} is not a computed tensor",
                            o.0
                        )));
                    }
                }
            }
            release(dev, &mut slots);
            Ok(outs)
        }
        Err(e) => {
            release(dev, &mut slots);
            Err(e)
        }
    }
}

/// The `(input, output)` pair of `op` that may share memory at instruction
/// `pc`: the op allows it ([`crate::graph::Op::donates`]), the input is a
/// computed tensor that owns its block with no live view of it, it is not a
/// program output, it has the output's size, and the program frees it right
/// after this node.
fn donation(
    g: &Graph,
    p: &Program,
    pc: usize,
    op: &crate::graph::Op,
    inputs: &[Value],
    outputs: &[Value],
    slots: &[Option<Slot>],
) -> Option<(usize, usize)> {
    let (i, o) = op.donates()?;
    let (vi, vo) = (*inputs.get(i)?, *outputs.get(o)?);
    let s = slots[vi.index()].as_ref()?;
    let dies_here = p.instrs[pc + 1..]
        .iter()
        .take_while(|x| matches!(x, Instr::Free(_)))
        .any(|x| *x == Instr::Free(vi));
    let viewed = slots
        .iter()
        .enumerate()
        .any(|(k, t)| k != vi.index() && t.as_ref().is_some_and(|t| t.r.block == s.r.block));
    let fits = g.shape(vo).byte_size(g.dtype(vo)) == s.r.byte_size();
    (s.owned
        && dies_here
        && !viewed
        && fits
        && !p.outputs.contains(&vi)
        && inputs.iter().filter(|&&v| v == vi).count() == 1)
        .then_some((i, o))
}

/// Offloaded activations: each root's bytes in the host pool, with the
/// device block it left (views of it are re-pointed at the fetch).
type Away = HashMap<Value, (crate::memory::HostBuf, Vec<usize>)>;

fn release(dev: &mut Device, slots: &mut [Option<Slot>]) {
    for s in slots.iter_mut() {
        if let Some(Slot { r, owned: true }) = s.take() {
            dev.free_block(r.block);
        }
    }
}

// The run's whole context: the program, its bindings and both its stores
// (device slots, offloaded activations) are what it runs on.
#[allow(clippy::too_many_arguments)]
fn run(
    dev: &mut Device,
    g: &Graph,
    p: &Program,
    bind: &Bindings,
    mode: Mode,
    sink: &mut Sink<'_>,
    slots: &mut [Option<Slot>],
    away: &mut Away,
) -> Result<()> {
    for (&v, r) in bind {
        if r.shape != *g.shape(v) || r.dtype != g.dtype(v) {
            let name = g.name_of(v).unwrap_or("?");
            return Err(Error::shape(
                "bind",
                format!(
                    "'{name}' is {} {} in the graph but {} {} on the device",
                    g.shape(v),
                    g.dtype(v),
                    r.shape,
                    r.dtype
                ),
            ));
        }
        slots[v.index()] = Some(Slot {
            r: (*r).clone(),
            owned: false,
        });
    }
    for (pc, &instr) in p.instrs.iter().enumerate() {
        match instr {
            Instr::Accumulate { value, slot } => {
                let missing = || {
                    Error::Internal(format!(
                        "accumulate of value {} into missing slot {slot}",
                        value.0
                    ))
                };
                let src = slots[value.index()].as_ref().ok_or_else(missing)?.r.clone();
                match sink {
                    Sink::Add(sinks) => {
                        let dst = sinks.get(slot).ok_or_else(missing)?;
                        let span = Span::new(MemPhase::Backward, "accumulate", "accumulate");
                        dev.timed(span, |b| b.accumulate(dst, &src))?;
                    }
                    Sink::Apply(f) => f(dev, slot, &src)?,
                }
            }
            Instr::Run(ni) | Instr::Recompute(ni) => {
                let recompute = matches!(instr, Instr::Recompute(_));
                let n = g.node(ni);
                // Outputs the caller bound (the weights' low-precision copies
                // standing in for their casts): nothing runs, and a recompute
                // after the program freed them binds them again.
                if n.outputs.iter().all(|o| bind.contains_key(o)) {
                    for o in &n.outputs {
                        slots[o.index()] = Some(Slot {
                            r: bind[o].clone(),
                            owned: false,
                        });
                    }
                    continue;
                }
                for &v in &n.inputs {
                    if slots[v.index()].is_none() {
                        let what = match &g.info(v).kind {
                            ValueKind::Param(s) => format!("parameter '{s}' is not bound"),
                            ValueKind::Input(s) => format!("input '{s}' is not bound"),
                            _ => format!("value {} read before it was computed", v.0),
                        };
                        return Err(Error::invalid("program bindings", what));
                    }
                }
                if n.op.is_alias() {
                    let src = slots[n.inputs[0].index()].as_ref().map(|s| s.r.block);
                    let o = n.outputs[0];
                    slots[o.index()] = src.map(|block| Slot {
                        r: TensorRef {
                            block,
                            shape: g.shape(o).clone(),
                            dtype: g.dtype(o),
                        },
                        owned: false,
                    });
                    continue;
                }
                let phase = match (mode, n.phase) {
                    (Mode::Eval, _) => MemPhase::Eval,
                    (Mode::Train, _) if recompute => MemPhase::Recompute,
                    (Mode::Train, Phase::Forward) => MemPhase::Forward,
                    (Mode::Train, Phase::Backward) => MemPhase::Backward,
                };
                let donated = donation(g, p, pc, &n.op, &n.inputs, &n.outputs, slots);
                if let Some((i, o)) = donated {
                    // The output takes the dying input's block; the Free that
                    // follows finds the input no longer owning it.
                    let (vi, vo) = (n.inputs[i], n.outputs[o]);
                    let src = slots[vi.index()].as_mut().expect("checked by donation");
                    src.owned = false;
                    let block = src.r.block;
                    slots[vo.index()] = Some(Slot {
                        r: TensorRef {
                            block,
                            shape: g.shape(vo).clone(),
                            dtype: g.dtype(vo),
                        },
                        owned: true,
                    });
                }
                for (k, &o) in n.outputs.iter().enumerate() {
                    if donated.is_some_and(|(_, d)| d == k) {
                        continue;
                    }
                    let tensor = if p.gradients.contains(&o) {
                        TensorKind::Gradient
                    } else {
                        TensorKind::Activation
                    };
                    dev.set_tag(Tag {
                        phase,
                        op: n.op.name(),
                        tensor,
                        value: Some(o.0),
                    });
                    let (shape, dtype) = (g.shape(o).clone(), g.dtype(o));
                    let block = dev.alloc_block(shape.byte_size(dtype))?;
                    slots[o.index()] = Some(Slot {
                        r: TensorRef {
                            block,
                            shape,
                            dtype,
                        },
                        owned: true,
                    });
                }
                let ins: Vec<&TensorRef> = n
                    .inputs
                    .iter()
                    .map(|v| &slots[v.index()].as_ref().expect("checked above").r)
                    .collect();
                let outs: Vec<&TensorRef> = n
                    .outputs
                    .iter()
                    .map(|v| &slots[v.index()].as_ref().expect("allocated above").r)
                    .collect();
                // Split borrows: the backend needs &mut while slots are borrowed.
                let ins: Vec<TensorRef> = ins.into_iter().cloned().collect();
                let outs: Vec<TensorRef> = outs.into_iter().cloned().collect();
                let ir: Vec<&TensorRef> = ins.iter().collect();
                let or: Vec<&TensorRef> = outs.iter().collect();
                let span = Span::new(phase, n.op.family(), n.op.name());
                dev.timed(span, |b| b.run(&n.op, &ir, &or))?;
            }
            Instr::Free(v) => {
                if let Some(Slot { r, owned: true }) = slots[v.index()].take() {
                    dev.free_block(r.block);
                }
            }
            Instr::Offload(v) => {
                let Some(Slot { r, owned: true }) = slots[v.index()].take() else {
                    return Err(Error::Internal(format!(
                        "offload of value {} not owned",
                        v.0
                    )));
                };
                dev.set_tag(Tag {
                    phase: MemPhase::Forward,
                    op: "offload",
                    tensor: TensorKind::Activation,
                    value: Some(v.0),
                });
                let h = match dev.host_alloc(r.shape.clone(), r.dtype) {
                    Ok(h) => h,
                    Err(e) => {
                        slots[v.index()] = Some(Slot { r, owned: true });
                        return Err(e);
                    }
                };
                let copied = dev.copy_out(&r, &h, 0);
                if let Err(e) = copied {
                    dev.host_free(h);
                    slots[v.index()] = Some(Slot { r, owned: true });
                    return Err(e);
                }
                // Its views, by slot: re-pointed at the fetch (by index, since
                // the freed block may be handed to another tensor meanwhile).
                let views: Vec<usize> = (0..slots.len())
                    .filter(|&k| {
                        slots[k]
                            .as_ref()
                            .is_some_and(|s| !s.owned && s.r.block == r.block)
                    })
                    .collect();
                dev.free_block(r.block);
                away.insert(v, (h, views));
            }
            Instr::Fetch(v) => {
                let Some((h, views)) = away.remove(&v) else {
                    return Err(Error::Internal(format!(
                        "fetch of value {} not offloaded",
                        v.0
                    )));
                };
                dev.set_tag(Tag {
                    phase: MemPhase::Backward,
                    op: "fetch",
                    tensor: TensorKind::Activation,
                    value: Some(v.0),
                });
                let block = match dev.alloc_block(h.byte_size()) {
                    Ok(b) => b,
                    Err(e) => {
                        away.insert(v, (h, views));
                        return Err(e);
                    }
                };
                let r = TensorRef {
                    block,
                    shape: h.shape.clone(),
                    dtype: h.dtype,
                };
                let copied = dev.copy_in(&h, 0, &r);
                dev.host_free(h);
                slots[v.index()] = Some(Slot { r, owned: true });
                copied?;
                // Views made of it before the offload see the new block.
                for k in views {
                    if let Some(s) = slots[k].as_mut() {
                        s.r.block = block;
                    }
                }
            }
        }
    }
    Ok(())
}

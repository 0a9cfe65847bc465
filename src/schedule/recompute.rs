//! Recompute policies: which forward activations the backward pass reads from
//! memory ("kept") and which it recomputes. A policy only changes lowering; the
//! training graph is the same, so gradients are bit-identical.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::{Graph, Phase, Value, ValueKind};

/// A recompute policy: which saved forward activations stay in memory for the
/// backward pass and which are recomputed from the kept ones. Written `none`,
/// `cheap`, `every-block` or `every-K-blocks` (see its `Display` and `FromStr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Recompute {
    /// Keep every activation the backward pass reads.
    None,
    /// Recompute only outputs of cheap ops (elementwise, norms, views) from kept
    /// values; matmul and attention outputs and the residual stream stay.
    Cheap,
    /// Keep only the inputs of every k-th transformer block; recompute the rest
    /// from there (`Every(1)`: checkpoint every block).
    Every(u32),
    /// As `Every(k)`, with the kept block inputs copied to the host pool after
    /// their last forward reader and fetched back before the backward pass
    /// (or its recompute) first reads them: activation offload.
    Offload(u32),
}

impl Recompute {
    /// The policies the planner tries, least recompute first.
    pub fn candidates(n_blocks: usize) -> Vec<Recompute> {
        let mut v = vec![Recompute::None, Recompute::Cheap];
        for k in [4u32, 2, 1] {
            if (k as usize) < n_blocks.max(1) || k == 1 {
                v.push(Recompute::Every(k));
            }
        }
        v
    }

    /// The activation-offload policies the planner may add to those.
    pub fn offload_candidates() -> Vec<Recompute> {
        vec![Recompute::Offload(1)]
    }

    /// Whether kept block inputs go to the host pool.
    pub fn offloads(&self) -> bool {
        matches!(self, Recompute::Offload(_))
    }
}

impl fmt::Display for Recompute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recompute::None => f.write_str("none"),
            Recompute::Cheap => f.write_str("cheap"),
            Recompute::Every(1) => f.write_str("every-block"),
            Recompute::Every(k) => write!(f, "every-{k}-blocks"),
            Recompute::Offload(1) => f.write_str("offload-every-block"),
            Recompute::Offload(k) => write!(f, "offload-every-{k}-blocks"),
        }
    }
}

impl FromStr for Recompute {
    type Err = Error;
    fn from_str(s: &str) -> Result<Recompute> {
        let bad = || {
            Error::invalid(
                "recompute policy",
                format!(
                    "'{s}'; use none, cheap, every-block, every-K-blocks or offload-every-block"
                ),
            )
        };
        Ok(match s {
            "none" => Recompute::None,
            "cheap" => Recompute::Cheap,
            "every-block" => Recompute::Every(1),
            "offload-every-block" => Recompute::Offload(1),
            _ if s.starts_with("offload-") => match s["offload-".len()..].parse()? {
                Recompute::Every(k) => Recompute::Offload(k),
                _ => return Err(bad()),
            },
            _ => {
                let k = s
                    .strip_prefix("every-")
                    .and_then(|r| r.strip_suffix("-blocks"))
                    .and_then(|k| k.parse().ok())
                    .filter(|&k: &u32| k > 0)
                    .ok_or_else(bad)?;
                Recompute::Every(k)
            }
        })
    }
}

/// The kept values `policy` moves to the host pool between the passes: under
/// [`Recompute::Offload`], those produced inside a block (the stream entering
/// the next kept block); none otherwise.
pub fn offloaded_values(g: &Graph, kept: &HashSet<Value>, policy: Recompute) -> HashSet<Value> {
    if !policy.offloads() {
        return HashSet::new();
    }
    kept.iter()
        .copied()
        .filter(|&v| {
            g.producer(v)
                .is_some_and(|p| g.node(p).phase == Phase::Forward && g.node(p).block.is_some())
        })
        .collect()
}

/// Forward values (storage roots) that backward nodes read.
pub fn saved_values(g: &Graph, root: &[Value], live: &[bool]) -> HashSet<Value> {
    let mut saved = HashSet::new();
    for (i, n) in g.nodes().iter().enumerate() {
        if !live[i] || n.phase != Phase::Backward {
            continue;
        }
        for &v in &n.inputs {
            if let Some(p) = g.producer(v) {
                if g.node(p).phase == Phase::Forward {
                    saved.insert(root[v.index()]);
                }
            }
        }
    }
    saved
}

fn external(g: &Graph, v: Value) -> bool {
    !matches!(g.info(v).kind, ValueKind::Computed { .. })
}

/// The saved values the policy keeps in memory; the others are recomputed.
pub fn kept_values(
    g: &Graph,
    root: &[Value],
    saved: &HashSet<Value>,
    policy: Recompute,
) -> HashSet<Value> {
    match policy {
        Recompute::None => saved.clone(),
        Recompute::Cheap => {
            // A saved value is dropped when its producer is cheap and every input
            // is available without an expensive op: external, saved (kept, or
            // itself cheaply recomputable), or cheaply computed from those.
            let mut memo = vec![None; g.num_values()];
            fn avail(
                g: &Graph,
                root: &[Value],
                saved: &HashSet<Value>,
                v: Value,
                memo: &mut Vec<Option<bool>>,
            ) -> bool {
                if external(g, v) || saved.contains(&root[v.index()]) {
                    return true;
                }
                if let Some(m) = memo[v.index()] {
                    return m;
                }
                let p = g.node(g.producer(v).expect("computed"));
                let ok =
                    p.op.is_cheap() && p.inputs.iter().all(|&u| avail(g, root, saved, u, memo));
                memo[v.index()] = Some(ok);
                ok
            }
            saved
                .iter()
                .copied()
                .filter(|&v| {
                    let p = g.node(g.producer(v).expect("saved values are computed"));
                    let droppable = p.op.is_cheap()
                        && p.inputs
                            .iter()
                            .all(|&u| avail(g, root, saved, u, &mut memo));
                    !droppable
                })
                .collect()
        }
        Recompute::Every(k) | Recompute::Offload(k) => {
            let k = k.max(1);
            let mut keep = HashSet::new();
            for n in g.nodes() {
                if n.phase != Phase::Forward {
                    continue;
                }
                match n.block {
                    None => {
                        // Outside the blocks everything stays, including the
                        // stream that leaves the last block.
                        keep.extend(n.outputs.iter().map(|o| root[o.index()]));
                        keep.extend(n.inputs.iter().map(|u| root[u.index()]));
                    }
                    Some(b) if b % k == 0 => {
                        // The block's entry: inputs that come from outside it.
                        for &u in &n.inputs {
                            let outside = g.producer(u).is_some_and(|p| g.node(p).block != Some(b));
                            if outside {
                                keep.insert(root[u.index()]);
                            }
                        }
                    }
                    Some(_) => {}
                }
            }
            saved.intersection(&keep).copied().collect()
        }
    }
}

//! A launch planned apart from running it: each family's `plan_*` functions turn
//! shapes into the kernels to launch, their grids and their typed arguments,
//! with buffers named by operand rather than by address. The backend resolves
//! and launches the plan ([`CudaBackend::run_plan`]); tests/cuda_emulated*.rs
//! replay the very same plan on the CPU emulator, so the emulator's launches
//! cannot drift from the host's.

use cudarc::driver::LaunchConfig;

use super::context::CudaBackend;
use super::launch::{ptr, Dims6, Entry, KArg};
use crate::backend::TensorRef;
use crate::error::Result;
use crate::tensor::DType;

/// A buffer a planned launch reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buf {
    /// The op's `i`-th input.
    In(usize),
    /// The op's `i`-th output.
    Out(usize),
    /// The backend's scratch buffer, of [`OpPlan::workspace_bytes`].
    Workspace,
    /// The launch's own table ([`Launch::table`]), uploaded before it runs.
    Table,
}

/// One field of a launch's table, the array of structs a kernel reads its
/// many tensors from (the optimizer's), little-endian and packed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Field {
    /// A buffer's address, as a `u64`.
    Ptr(Buf),
    /// `u64`.
    U64(u64),
    /// `unsigned`.
    U32(u32),
    /// `float`.
    F32(f32),
}

/// One kernel argument, of the kernel's parameter type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// A device pointer to the buffer's first element.
    Buf(Buf),
    /// `u64`.
    U64(u64),
    /// `unsigned`.
    U32(u32),
    /// `float`.
    F32(f32),
    /// `Dims6` (a shape padded to rank 6), by value.
    Dims([u64; 6]),
}

impl From<Buf> for Arg {
    fn from(b: Buf) -> Self {
        Arg::Buf(b)
    }
}
impl From<u64> for Arg {
    fn from(x: u64) -> Self {
        Arg::U64(x)
    }
}
impl From<u32> for Arg {
    fn from(x: u32) -> Self {
        Arg::U32(x)
    }
}
impl From<f32> for Arg {
    fn from(x: f32) -> Self {
        Arg::F32(x)
    }
}

/// One planned kernel launch.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    /// The kernel, instantiated for the op's storage type at launch.
    pub entry: Entry,
    /// Blocks (x, y, z).
    pub grid: (u32, u32, u32),
    /// Threads per block (x, y, z).
    pub block: (u32, u32, u32),
    /// Dynamic shared memory per block, in bytes.
    pub shared_bytes: u32,
    /// The arguments in the kernel's order.
    pub args: Vec<Arg>,
    /// What [`Buf::Table`] holds for this launch; empty for most.
    pub table: Vec<Field>,
}

impl Launch {
    /// `entry` over `cfg` (made by `launch::grid` or `launch::rows`).
    pub(super) fn new(entry: Entry, cfg: LaunchConfig, args: Vec<Arg>) -> Launch {
        Launch {
            entry,
            grid: cfg.grid_dim,
            block: cfg.block_dim,
            shared_bytes: cfg.shared_mem_bytes,
            args,
            table: Vec::new(),
        }
    }

    /// The launch reading `table` as [`Buf::Table`].
    pub(super) fn with_table(self, table: Vec<Field>) -> Launch {
        Launch { table, ..self }
    }
}

/// The launches of one op, in order, and the scratch they share.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OpPlan {
    /// Bytes of the workspace the launches use ([`Buf::Workspace`]), if any.
    pub workspace_bytes: Option<u64>,
    /// The launches, in stream order.
    pub launches: Vec<Launch>,
}

impl OpPlan {
    /// The plan of most ops: one launch, no workspace.
    pub fn one(launch: Launch) -> OpPlan {
        OpPlan {
            workspace_bytes: None,
            launches: vec![launch],
        }
    }
}

/// `args![a, b, ..]`: a launch's argument list, each converted by its type.
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        vec![$($crate::backend::cuda::plan::Arg::from($a)),*]
    };
}
pub(super) use args;

impl CudaBackend {
    /// Launches `plan` for storage type `dt` on the op's tensors.
    pub(super) fn run_plan(
        &mut self,
        dt: DType,
        plan: &OpPlan,
        ins: &[&TensorRef],
        outs: &[&TensorRef],
    ) -> Result<()> {
        let ws = match plan.workspace_bytes {
            Some(bytes) => self.workspace(bytes)?,
            None => 0,
        };
        let addr = |b: Buf, table: u64| match b {
            Buf::In(i) => ptr(ins[i]),
            Buf::Out(i) => ptr(outs[i]),
            Buf::Workspace => ws,
            Buf::Table => table,
        };
        for l in &plan.launches {
            let mut table = 0;
            if !l.table.is_empty() {
                let mut bytes: Vec<u8> = Vec::new();
                for f in &l.table {
                    match *f {
                        Field::Ptr(b) => bytes.extend_from_slice(&addr(b, 0).to_le_bytes()),
                        Field::U64(x) => bytes.extend_from_slice(&x.to_le_bytes()),
                        Field::U32(x) => bytes.extend_from_slice(&x.to_le_bytes()),
                        Field::F32(x) => bytes.extend_from_slice(&x.to_le_bytes()),
                    }
                }
                table = self.upload_table(&bytes)?;
            }
            let args: Vec<KArg> = l
                .args
                .iter()
                .map(|a| match *a {
                    Arg::Buf(b) => KArg::U64(addr(b, table)),
                    Arg::U64(x) => KArg::U64(x),
                    Arg::U32(x) => KArg::U32(x),
                    Arg::F32(x) => KArg::F32(x),
                    Arg::Dims(d) => KArg::Dims(Dims6 { d }),
                })
                .collect();
            let cfg = LaunchConfig {
                grid_dim: l.grid,
                block_dim: l.block,
                shared_mem_bytes: l.shared_bytes,
            };
            self.launch(l.entry, dt, cfg, &args)?;
        }
        Ok(())
    }
}

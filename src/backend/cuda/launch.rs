//! Kernel registration and launch: each family declares its kernel file and
//! entry points once (`family_kernels!`), and launches name an [`Entry`] and a
//! storage type instead of a kernel string, so a kernel the host can ask for is a
//! kernel tests/cuda_kernels.rs has checked in the compiled module.

use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

use super::context::{drv_err, unavailable, CudaBackend};
use crate::backend::TensorRef;
use crate::error::{Error, Result};
use crate::tensor::DType;

/// Instantiated for every storage type (`FOR_EACH_DTYPE` in common.cuh).
pub(super) const EVERY_DTYPE: &[DType] = &[DType::F32, DType::F16, DType::BF16];

/// One kernel file and every entry point the host may launch from it.
#[derive(Debug)]
pub struct FamilyKernels {
    /// The file's name in kernels/, without `.cu`; it names the module too.
    pub file: &'static str,
    /// The file's text (common.cuh is prepended when it is compiled).
    pub source: &'static str,
    /// The entry points, each for every storage type it is instantiated for.
    pub entries: &'static [Entry],
}

impl FamilyKernels {
    /// Every kernel symbol the host may ask this file's module for.
    pub fn symbols(&self) -> Vec<String> {
        self.entries
            .iter()
            .flat_map(|e| e.dtypes.iter().map(|&d| e.symbol_unchecked(d)))
            .collect()
    }
}

/// A kernel entry point of one family file, `<stem>_<dtype suffix>` in the
/// module. Made only by `family_kernels!`, which also lists it in the family's
/// [`FamilyKernels`]: an entry that exists is an entry that is declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    file: &'static str,
    source: &'static str,
    stem: &'static str,
    dtypes: &'static [DType],
}

impl Entry {
    /// Only for `family_kernels!`.
    pub(super) const fn declared(
        file: &'static str,
        source: &'static str,
        stem: &'static str,
        dtypes: &'static [DType],
    ) -> Entry {
        Entry {
            file,
            source,
            stem,
            dtypes,
        }
    }

    /// The kernel file it lives in.
    pub fn file(&self) -> &'static str {
        self.file
    }

    /// The kernel's name without its dtype suffix.
    pub fn stem(&self) -> &'static str {
        self.stem
    }

    /// That file's text.
    pub(super) fn source(&self) -> &'static str {
        self.source
    }

    /// The kernel's symbol for storage type `dtype`.
    pub fn symbol(&self, dtype: DType) -> Result<String> {
        suffix(dtype)?;
        if !self.dtypes.contains(&dtype) {
            return Err(Error::Internal(format!(
                "kernels/{}.cu declares {} for no {dtype} tensors",
                self.file, self.stem
            )));
        }
        Ok(self.symbol_unchecked(dtype))
    }

    fn symbol_unchecked(&self, dtype: DType) -> String {
        // Only storage types reach here (`symbol` and the declared lists).
        format!("{}_{}", self.stem, suffix(dtype).unwrap_or("?"))
    }
}

/// Declares a family's kernel file (`kernels/<file>.cu`) as the `pub const`
/// `$name: FamilyKernels`, and each of its entry points as a private `const` of
/// type [`Entry`] with the storage types it is instantiated for.
macro_rules! family_kernels {
    (
        $(#[$m:meta])*
        pub const $name:ident = $file:literal {
            $($(#[$em:meta])* $entry:ident = $stem:literal for $dtypes:expr),* $(,)?
        }
    ) => {
        $(
            $(#[$em])*
            const $entry: $crate::backend::cuda::launch::Entry =
                $crate::backend::cuda::launch::Entry::declared(
                    $file,
                    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/", $file, ".cu")),
                    $stem,
                    $dtypes,
                );
        )*
        $(#[$m])*
        pub const $name: $crate::backend::cuda::launch::FamilyKernels =
            $crate::backend::cuda::launch::FamilyKernels {
                file: $file,
                source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/", $file, ".cu")),
                entries: &[$($entry),*],
            };
    };
}
pub(super) use family_kernels;

/// The suffix of a storage type in kernel names.
pub(super) fn suffix(d: DType) -> Result<&'static str> {
    Ok(match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => return Err(unavailable(format!("{other} tensors"))),
    })
}

/// A tensor's device address.
pub(super) fn ptr(t: &TensorRef) -> u64 {
    t.block.handle + t.block.offset
}

/// One thread per item: ⌈n / block⌉ blocks (at least one) of `block` threads.
pub(super) fn grid(n: usize, block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n as u64).div_ceil(block as u64).max(1) as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block of 256 threads per row (at least one block).
pub(super) fn rows(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Shapes up to rank 6, passed by value to the reduction kernels.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Dims6 {
    pub(super) d: [u64; 6],
}
// SAFETY: plain old data with the C layout of the kernel's struct.
unsafe impl DeviceRepr for Dims6 {}

/// One kernel argument, kept alive until the launch has read it.
pub(super) enum KArg {
    U64(u64),
    U32(u32),
    F32(f32),
    Dims(Dims6),
}

impl CudaBackend {
    /// Launches `entry` for `dtype` with `args`, which are in the kernel's order
    /// and of its parameter types (`u64`, `unsigned`, `float`, `Dims6`).
    pub(super) fn launch(
        &mut self,
        entry: Entry,
        dtype: DType,
        cfg: LaunchConfig,
        args: &[KArg],
    ) -> Result<()> {
        let f = self.function(entry, dtype)?;
        let mut b = self.stream.launch_builder(&f);
        for a in args {
            match a {
                KArg::U64(x) => b.arg(x),
                KArg::U32(x) => b.arg(x),
                KArg::F32(x) => b.arg(x),
                KArg::Dims(x) => b.arg(x),
            };
        }
        // SAFETY: argument types and order match the kernel's signature.
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| drv_err("launch", e))
    }
}

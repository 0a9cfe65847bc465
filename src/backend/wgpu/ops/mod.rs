//! The op families, one file each with the names of `graph::ops`, and the
//! registration of their shaders.
//!
//! A family declares its shader files and the entry points it may dispatch
//! once, in `SHADERS`; its dispatches name entries through [`Kernel`] handles
//! made by [`Shader::kernel`], which refuses (at compile time) an entry its
//! shader does not declare. The tests check the other direction: that every
//! declared entry exists in every variant of its shader, and that every
//! `@compute` entry in `shaders/` is declared here.

pub(super) mod attention;
pub(super) mod cast;
pub(super) mod cross_entropy;
pub(super) mod elementwise;
pub(super) mod embedding;
pub(super) mod layernorm;
pub(super) mod matmul;
pub(super) mod reduce;
pub(super) mod rmsnorm;
pub(super) mod rope;
pub(super) mod shape;
pub(super) mod softmax;

/// The type aliases a shader's bindings are declared with, which decide the
/// variants it is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aliases {
    /// `T`, one storage type for every float tensor: compiled per dtype.
    T,
    /// `TI` in, `TO` out: compiled per pair of dtypes a cast converts between.
    Cast,
    /// `TI` and `TO` for an op whose operands may have two storage types:
    /// compiled per pair, one type twice included.
    Pair,
}

/// One WGSL file of `shaders/` and the entry points the host may ask it for.
#[derive(Debug)]
pub struct Shader {
    /// The file's name without `.wgsl`; also the module's label.
    pub file: &'static str,
    /// The file's text (`common.wgsl` and the variant's header are added when
    /// it is compiled).
    pub source: &'static str,
    /// Its `@compute` entry points.
    pub entries: &'static [&'static str],
    /// The aliases its bindings use.
    pub aliases: Aliases,
}

/// One entry point of one shader: what a dispatch names.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    pub(super) shader: &'static Shader,
    pub(super) entry: &'static str,
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl Shader {
    /// The handle of `entry`; used in a `const`, an undeclared entry fails the
    /// build.
    pub const fn kernel(&'static self, entry: &'static str) -> Kernel {
        let mut i = 0;
        while i < self.entries.len() {
            if same(self.entries[i], entry) {
                return Kernel {
                    shader: self,
                    entry,
                };
            }
            i += 1;
        }
        panic!("entry point not declared in its shader's entries");
    }
}

/// A family and its shader files.
#[derive(Debug)]
pub struct Family {
    /// The family's name: a file of `graph::ops`, or `optim`.
    pub name: &'static str,
    /// Its shaders, each file named after the family.
    pub shaders: &'static [Shader],
}

/// Every family with shaders: the op families, then the optimizer's kernels,
/// which run outside the graph.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "attention",
        shaders: attention::SHADERS,
    },
    Family {
        name: "cast",
        shaders: cast::SHADERS,
    },
    Family {
        name: "cross_entropy",
        shaders: cross_entropy::SHADERS,
    },
    Family {
        name: "elementwise",
        shaders: elementwise::SHADERS,
    },
    Family {
        name: "embedding",
        shaders: embedding::SHADERS,
    },
    Family {
        name: "layernorm",
        shaders: layernorm::SHADERS,
    },
    Family {
        name: "matmul",
        shaders: matmul::SHADERS,
    },
    Family {
        name: "reduce",
        shaders: reduce::SHADERS,
    },
    Family {
        name: "rmsnorm",
        shaders: rmsnorm::SHADERS,
    },
    Family {
        name: "rope",
        shaders: rope::SHADERS,
    },
    Family {
        name: "shape",
        shaders: shape::SHADERS,
    },
    Family {
        name: "softmax",
        shaders: softmax::SHADERS,
    },
    Family {
        name: "optim",
        shaders: super::optim::SHADERS,
    },
];

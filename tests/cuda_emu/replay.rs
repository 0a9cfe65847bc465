//! Writes a planned op (`headroom::backend::cuda::plan::OpPlan`) for the
//! replaying drivers (tests/cuda_emu/replay.h): the op's buffers by file name,
//! then each launch exactly as the host would make it.

// Each test binary that includes this uses only some of it.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;

use headroom::backend::cuda::plan::{Arg, Buf, Field, OpPlan};
use headroom::DType;

/// What a buffer holds.
#[derive(Clone, Copy, Debug)]
pub enum Ty {
    /// The op's storage type.
    T,
    /// f32 whatever the storage type (statistics, losses).
    F32,
    /// i32 (ids, targets).
    I32,
    /// This storage type whatever the op's (a cast's source).
    Of(DType),
}

/// One operand of the op: its file in the scratch folder (`name.f32`, or
/// `name.i32`), what it holds and its element count; an output `updated` in
/// place starts as its file's contents rather than NaN.
#[derive(Clone, Copy, Debug)]
pub struct Io<'a> {
    pub name: &'a str,
    pub ty: Ty,
    pub len: usize,
    pub updated: bool,
}

pub fn io(name: &str, ty: Ty, len: usize) -> Io<'_> {
    Io {
        name,
        ty,
        len,
        updated: false,
    }
}

/// An output the op updates in place (`Backend::accumulate`'s dst).
pub fn updated(name: &str, ty: Ty, len: usize) -> Io<'_> {
    Io {
        updated: true,
        ..io(name, ty, len)
    }
}

fn type_name(ty: Ty, dt: DType) -> &'static str {
    match (ty, dt) {
        (Ty::F32, _) | (Ty::T, DType::F32) => "f32",
        (Ty::T, DType::F16) => "f16",
        (Ty::T, DType::BF16) => "bf16",
        (Ty::I32, _) => "i32",
        (Ty::Of(DType::U8), _) => "u8",
        (Ty::Of(d), _) => type_name(Ty::T, d),
        (Ty::T, other) => panic!("no kernels for {other}"),
    }
}

/// Writes `dir/launches.txt` for `plan` on storage type `dt`, its inputs read
/// from and its outputs written to the files of `ins` and `outs`; the
/// workspace, if the plan has one, is the f32 output `workspace`.
pub fn write_plan(dir: &Path, plan: &OpPlan, dt: DType, ins: &[Io], outs: &[Io]) {
    let mut s = String::new();
    for (role, ios) in [("in", ins), ("out", outs)] {
        for b in ios {
            let role = if b.updated { "inout" } else { role };
            writeln!(s, "{role} {} {} {}", b.name, type_name(b.ty, dt), b.len).unwrap();
        }
    }
    if let Some(bytes) = plan.workspace_bytes {
        writeln!(s, "out workspace f32 {}", bytes.div_ceil(4)).unwrap();
    }
    let buf = |b: Buf| match b {
        Buf::In(i) => ins[i].name,
        Buf::Out(i) => outs[i].name,
        Buf::Workspace => "workspace",
        Buf::Table => "table",
    };
    for l in &plan.launches {
        if !l.table.is_empty() {
            s.push_str("table");
            for f in &l.table {
                match *f {
                    Field::Ptr(b) => write!(s, " p:{}", buf(b)),
                    Field::U64(x) => write!(s, " u:{x}"),
                    Field::U32(x) => write!(s, " w:{x}"),
                    Field::F32(x) => write!(s, " f:{:08x}", x.to_bits()),
                }
                .unwrap();
            }
            s.push('\n');
        }
        let (g, b) = (l.grid, l.block);
        write!(
            s,
            "launch {} {} {} {} {} {} {} {}",
            l.entry.symbol(dt).unwrap(),
            g.0,
            g.1,
            g.2,
            b.0,
            b.1,
            b.2,
            l.shared_bytes
        )
        .unwrap();
        for a in &l.args {
            match *a {
                Arg::Buf(b) => write!(s, " b:{}", buf(b)),
                Arg::U64(x) => write!(s, " u:{x}"),
                Arg::U32(x) => write!(s, " w:{x}"),
                Arg::F32(x) => write!(s, " f:{:08x}", x.to_bits()),
                Arg::Dims(d) => write!(s, " d:{}", d.map(|x| x.to_string()).join(",")),
            }
            .unwrap();
        }
        s.push('\n');
    }
    std::fs::write(dir.join("launches.txt"), s).unwrap();
}

//! From graph to execution: lowering to a program, and the executor.

pub mod executor;
pub mod program;

pub use executor::{execute, Bindings, Mode};
pub use program::{lower, Instr, Program};

//! From graph to execution: lowering to a program, and the executor.

pub mod executor;
pub mod planner;
pub mod program;
pub mod recompute;

pub use executor::{execute, execute_into, Bindings, Mode};
pub use planner::{plan, simulate, Breakdown, Choice, Plan};
pub use program::{lower, lower_with, Instr, LowerOptions, Program};
pub use recompute::Recompute;

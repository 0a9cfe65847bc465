//! From graph to execution: step graphs compiled into programs (`step`), run
//! on a device (`run`, `executor`), simulated (`simulate`) and planned within a
//! budget (`planner`).

pub mod executor;
pub mod planner;
pub mod program;
pub mod recompute;
pub mod run;
pub mod simulate;
pub mod step;

pub use executor::{execute, execute_into, Bindings, Mode};
pub use planner::{plan, simulate, Breakdown, Choice, Plan};
pub use program::{lower, lower_with, Instr, LowerOptions, Program};
pub use recompute::Recompute;

//! From graph to execution: step graphs compiled into programs (`step`), run
//! on a device (`run`, `executor`), simulated (`simulate`) and planned within a
//! budget (`planner`).

pub mod cost;
pub mod executor;
pub mod gpus;
pub mod levers;
pub mod planner;
pub mod program;
pub mod recompute;
pub mod run;
pub mod simulate;
pub mod state;
pub mod step;
pub mod update;

pub use executor::{execute, execute_into, execute_with, Bindings, Mode, Sink};
pub use planner::{plan, simulate, Breakdown, Choice, Plan};
pub use program::{lower, lower_with, Instr, LowerOptions, Program};
pub use recompute::Recompute;

//! The commands of the `headroom` binary that need more than a screen.

pub mod train;

//! headroom: train transformer models without dying of "out of memory".
//!
//! Model code records ops into a [`graph::Graph`]; [`graph::autodiff`] turns it
//! into a training graph; [`schedule`] lowers it to a program of run/free
//! instructions that a [`backend::Backend`] executes, every byte going through the
//! [`memory`] allocator.
//!
//! Train the bundled tiny GPT on the bundled Shakespeare on the best device
//! (planned to fit its memory), then save an atomic checkpoint:
//!
//! ```no_run
//! use headroom::data::Dataset;
//! use headroom::{AdamW, Device, Gpt, GptConfig, TrainConfig, Trainer};
//!
//! fn main() -> headroom::Result<()> {
//!     let data = Dataset::bundled();
//!     let model = Gpt::new(GptConfig::tiny())?;
//!     let cfg = TrainConfig { batch: 16, seq_len: 64, steps: 100, ..Default::default() };
//!     let mut trainer = Trainer::new(Device::best()?, model, AdamW::new(3e-3), cfg)?;
//!     print!("{}", trainer.plan()?);
//!     for _ in 0..100 {
//!         let batch = trainer.next_batch(&data)?;
//!         let report = trainer.step(&batch)?;
//!         println!("step {} loss {:.3}", report.step, report.loss);
//!     }
//!     trainer.save_checkpoint("run/step-00000100")?;
//!     Ok(())
//! }
//! ```
//!
//! A model of your own implements [`Model`]: see `examples/embed.rs`.

#![warn(missing_docs)]

pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod memory;
pub mod nn;
pub mod optim;
pub mod output;
pub mod report;
pub mod rng;
pub mod scaler;
pub mod schedule;
pub mod tensor;
pub mod train;

pub use backend::Device;
pub use error::{Error, Result};
pub use graph::amp::Precision;
pub use graph::{Graph, Value};
pub use nn::{Gpt, GptConfig, Model};
pub use optim::AdamW;
pub use tensor::{DType, HostTensor, Shape};
pub use train::{TrainConfig, Trainer};

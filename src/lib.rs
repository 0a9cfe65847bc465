//! headroom: train transformer models without dying of "out of memory".
//!
//! Model code records ops into a [`graph::Graph`]; [`graph::autodiff`] turns it
//! into a training graph; [`schedule`] lowers it to a program of run/free
//! instructions that a [`backend::Backend`] executes, every byte going through the
//! [`memory`] allocator.

pub mod backend;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod graph;
pub mod memory;
pub mod nn;
pub mod optim;
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

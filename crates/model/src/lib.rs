//! The embedded policy model: Qwen2/Qwen2.5, Qwen3 and Llama decoders on candle, written with ops
//! that all have a backward so the trainer can differentiate through them; checkpoint loading;
//! tokenizer and chat template; seeded batched generation; chunked log-probs; and creation of
//! tiny checkpoints from a seed; LoRA adapters (seeded init, merge, PEFT format).
//!
//! This crate never reads environment variables, never touches the network and keeps no global
//! state: device, dtype and seeds are always passed in.

pub mod attention;
pub mod cache;
pub mod chat;
pub mod config;
pub mod decoder;
pub mod device;
mod error;
pub mod frozen;
pub mod fused;
pub mod generate;
pub mod init;
pub mod layers;
pub mod logprobs;
pub mod lora;
pub mod model;
pub mod rope;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use cache::KvCache;
pub use candle_core::{DType, Device, Tensor};
pub use config::Config;
pub use device::{open_device, DeviceName};
pub use error::{Error, Result};
pub use model::{Arch, CausalLm};

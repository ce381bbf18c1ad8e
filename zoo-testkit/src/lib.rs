//! Test support for zoo's crates (never shipped: `publish = false`).
//!
//! [`hub`]: a fake Hugging Face Hub on `127.0.0.1` that answers like the real one and fails on
//! demand (error statuses, truncated or wrong bodies, a server that never answers, a body trickled at
//! a few bytes per second, a transfer that stalls half-way). Its items are re-exported here.
//!
//! [`pth`]: PyTorch `.pth` files written without PyTorch (zip layout, pickle opcodes, state dicts).

pub mod hub;
pub mod pth;

pub use hub::*;

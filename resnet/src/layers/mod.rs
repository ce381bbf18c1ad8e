//! Building blocks below the level of a residual block.

pub mod blocked;
pub mod conv;
pub mod conv_bn;
pub(crate) mod cpu_conv;
pub mod engine;
pub(crate) mod linear;
pub mod pool;
pub mod quant;

pub use blocked::Layout;
pub use conv::{Conv, ConvSpec};
pub use conv_bn::{BnMode, ConvBn, ConvBnOptions};
pub use engine::{Bf16Kernel, Engine, Int8Kernel, Lowering};
pub use quant::{ActQuant, Calibration};

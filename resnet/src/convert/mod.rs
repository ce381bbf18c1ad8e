//! Importers: checkpoints of other frameworks into self-describing safetensors ([`keras`]).
//!
//! A converted checkpoint is checked against the architecture it claims with the loader's own tensor check
//! ([`crate::load::check_tensors`]) and carries the loader's metadata ([`crate::load::write_metadata`]), so
//! [`crate::load::load`] reads it back with no other argument.

pub mod keras;

//! Fuzzing zoo's readers of untrusted files.
//!
//! [`targets`] holds one function per reader, taking arbitrary bytes; each must return (any `Result` is
//! fine) without panicking, aborting, hanging or allocating without bound. Two runners share them:
//! - `tests/mutation.rs`, run by `cargo test` on stable Rust: a fixed-seed [`mutate`] campaign per target
//!   over its seed corpus (`corpus/<target>/`), each target in a child process with a per-input time
//!   limit and a memory cap, so a crash, abort, hang or runaway allocation fails the test and saves the
//!   input;
//! - `fuzz_targets/*.rs` for `cargo fuzz run <target>` (libFuzzer, coverage-guided), for long runs
//!   (`scripts/fuzz_long.sh`).
//!
//! Inputs that once failed are kept in the corpus, so both runners replay them.

pub mod mutate;
pub mod targets;

/// A fuzz target: runs one input through a reader, panicking only on a bug.
pub type Target = fn(&[u8]);

/// The targets, by name (also their corpus directory under `corpus/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("image", targets::image),
    ("safetensors", targets::safetensors),
    ("pth", targets::pth),
    ("keras", targets::keras),
    ("npy", targets::npy),
];

/// `corpus/<target>` of this crate.
pub fn corpus_dir(target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// The seed inputs of `target`, sorted by file name.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(target))
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            Some((name, std::fs::read(&p).ok()?))
        })
        .collect()
}

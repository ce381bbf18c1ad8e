//! `cargo fuzz run keras`: the `keras` target of [`zoo_fuzz::targets`] under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zoo_fuzz::targets::keras(data));

//! The consumer's own arguments: a wrong count is an error with a usage line, not an index panic. (Its real
//! work, the three lines against a fake hub, is checked by zoo-cli/tests/consumer.rs; this test also makes
//! `cargo test --workspace` build the binary that test runs.)

#[test]
fn missing_arguments_are_a_usage_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zoo-consumer"))
        .arg("resnet50")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("usage: zoo-consumer NAME IMAGE"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

//! PyTorch zip state dicts through Candle's code-free pickle reader.
//! Fixtures: `tests/fixtures/*.pth`, made by `scripts/gen_pth_fixtures.py`.

use std::path::PathBuf;

use candle_core::{DType, Device};
use weights::pth::{read_state_dict, PthError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn plain_state_dict_is_read() {
    let t = read_state_dict(fixture("tiny_state_dict.pth"), &Device::Cpu).unwrap();
    let mut names: Vec<&str> = t.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "0.bias",
            "0.weight",
            "1.bias",
            "1.num_batches_tracked",
            "1.running_mean",
            "1.running_var",
            "1.weight",
            "3.bias",
            "3.weight"
        ]
    );
    assert_eq!(t["0.weight"].dims(), &[2, 1, 1, 1]);
    assert_eq!(t["1.running_var"].to_vec1::<f32>().unwrap(), [0., 1.]);
    assert_eq!(t["1.num_batches_tracked"].dtype(), DType::I64);
    // Stored column-major (a transposed view); read back in logical order.
    assert_eq!(t["3.weight"].to_vec2::<f32>().unwrap(), [[0., 3.], [1., 4.], [2., 5.]]);
    assert_eq!(t["3.bias"].to_vec1::<f32>().unwrap(), [0., 1., 2.]);
}

#[test]
fn whole_module_is_refused_with_advice() {
    let err = read_state_dict(fixture("whole_module.pth"), &Device::Cpu).unwrap_err();
    assert!(matches!(err, PthError::NotStateDict { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("torch.nn.modules.container") && msg.contains("Sequential"),
        "{msg}"
    );
    assert!(
        msg.contains("torch.save(model.state_dict(), path)") && msg.contains("safetensors"),
        "{msg}"
    );
}

#[test]
fn nested_checkpoint_names_the_key() {
    let err = read_state_dict(fixture("nested_checkpoint.pth"), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`state_dict`") && err.contains("torch.save(model.state_dict(), path)"),
        "{err}"
    );
}

#[test]
fn non_pytorch_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("legacy.pth");
    std::fs::write(&path, b"\x80\x02\x8a\x0alegacy pickle").unwrap();
    let err = read_state_dict(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("legacy.pth") && err.contains("not a zip-format"), "{err}");
    let err = read_state_dict(dir.path().join("absent.pth"), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.pth"), "{err}");
}

use zoo_testkit::pth::pickle as pk;
use zoo_testkit::pth::zip_stored;

/// A `.pth` made of `pickle` and a 64-byte (16 floats) storage `archive/data/0`.
fn hostile(dir: &std::path::Path, pickle: &[u8]) -> PathBuf {
    let storage: Vec<u8> = (0..16).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let path = dir.join("hostile.pth");
    std::fs::write(
        &path,
        zip_stored(&[("archive/data.pkl", pickle), ("archive/data/0", &storage)]),
    )
    .unwrap();
    path
}

#[test]
fn hand_made_archive_reads_back() {
    // The test's own writer and pickle pieces make a valid state dict (so the hostile cases below fail for
    // the reason they name, not for a broken archive).
    let dir = tempfile::tempdir().unwrap();
    let p = hostile(dir.path(), &pk::dict("w", pk::tensor(16, 4, &[2, 3], &[3, 1])));
    let t = read_state_dict(&p, &Device::Cpu).unwrap();
    assert_eq!(t["w"].to_vec2::<f32>().unwrap(), [[4., 5., 6.], [7., 8., 9.]]);
}

#[test]
fn hostile_pickles_are_refused_without_panic_or_huge_allocation() {
    let dir = tempfile::tempdir().unwrap();
    // Doubling through the memo: 2^40 objects from a pickle of a few hundred bytes.
    let mut laughs = vec![0x80, 2, b']', b'q', 0];
    for _ in 0..40 {
        laughs.extend_from_slice(&[b'(', b'h', 0, b'h', 0, b't', b'q', 0]);
    }
    laughs.push(b'.');
    // A million nested tuples: dropping them would overflow the stack.
    let mut deep = vec![0x80, 2, b']'];
    deep.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    deep.push(b'.');
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("memo doubling", laughs, "more than 2000000 objects"),
        ("deep nesting", deep, "nested deeper than 100"),
        (
            "huge string",
            [&[0x80, 2, b'X'][..], &u32::MAX.to_le_bytes(), b"abc."].concat(),
            "a string of 4294967295 bytes",
        ),
        (
            "LONG1 of 200 bytes",
            [&[0x80, 2, 0x8a, 200][..], &[1u8; 200], b"."].concat(),
            "LONG1 of 200 bytes",
        ),
        ("unknown opcode", vec![0x80, 2, b'i', b'.'], "unknown pickle opcode"),
        ("pop from empty", vec![0x80, 2, b's', b'.'], "empty stack"),
    ];
    for (what, pickle, want) in cases {
        let err = read_state_dict(hostile(dir.path(), &pickle), &Device::Cpu).unwrap_err();
        assert!(matches!(err, PthError::Pickle { .. }), "{what}: {err}");
        assert!(
            err.to_string().contains(want) && err.to_string().contains("hostile.pth"),
            "{what}: {err}"
        );
    }
}

#[test]
fn hostile_tensor_headers_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let short_args = [
        pk::global("torch._utils", "_rebuild_tensor_v2"),
        pk::tuple(&[]),
        vec![b'R'],
    ]
    .concat();
    let from_type = [
        pk::global("torch._tensor", "_rebuild_from_type_v2"),
        pk::tuple(&[pk::int(1)]),
        vec![b'R'],
    ]
    .concat();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // Candle's own reader panics on these (Vec::remove out of bounds).
        ("no arguments", short_args, "0 arguments"),
        ("short _rebuild_from_type_v2", from_type, "no tensors"),
        // Sizes that overflow, or that the 64-byte storage cannot hold.
        (
            "huge shape",
            pk::tensor(16, 0, &[1 << 40, 1 << 40], &[1 << 40, 1]),
            "overflows",
        ),
        (
            "view past the storage",
            pk::tensor(16, 10, &[2, 4], &[4, 1]),
            "runs past its storage",
        ),
        (
            "storage larger than its data",
            pk::tensor(1 << 30, 0, &[4], &[1]),
            "should hold 4294967296 bytes",
        ),
        ("negative size", pk::tensor(16, 0, &[-1], &[1]), "non-negative"),
        ("strided view", pk::tensor(16, 0, &[2, 2], &[1, 4]), "non-contiguous"),
        (
            "rank mismatch",
            pk::tensor(16, 0, &[2, 2], &[1]),
            "2 sizes but 1 strides",
        ),
    ];
    for (what, value, want) in cases {
        let err = read_state_dict(hostile(dir.path(), &pk::dict("w", value)), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want) && err.contains("hostile.pth"), "{what}: {err}");
    }
}

#[test]
fn hostile_zip_directories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("tiny_state_dict.pth")).unwrap();
    let eocd = good.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    let mut cases = Vec::new();
    // The central directory's offset pointing past the end, or at the last byte.
    for offset in [u32::MAX - 1, good.len() as u32 - 1] {
        let mut b = good.clone();
        b[eocd + 16..eocd + 20].copy_from_slice(&offset.to_le_bytes());
        cases.push(b);
    }
    // A file cut anywhere in its directory.
    for cut in [good.len() - 1, good.len() - 30, eocd + 3, 100] {
        cases.push(good[..cut].to_vec());
    }
    for (i, bytes) in cases.into_iter().enumerate() {
        let p = dir.path().join(format!("zip{i}.pth"));
        std::fs::write(&p, bytes).unwrap();
        let err = read_state_dict(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains(&format!("zip{i}.pth")), "{err}");
    }
}

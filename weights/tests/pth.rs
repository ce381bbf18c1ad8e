//! PyTorch zip state dicts through Candle's code-free pickle reader.
//! Fixtures: `tests/fixtures/*.pth`, made by `scripts/gen_pth_fixtures.py`.

use std::path::PathBuf;

use candle_core::{DType, Device};
use weights::pth::{read_state_dict, PthError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
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
    assert!(msg.contains("torch.nn.modules.container") && msg.contains("Sequential"), "{msg}");
    assert!(msg.contains("torch.save(model.state_dict(), path)") && msg.contains("safetensors"), "{msg}");
}

#[test]
fn nested_checkpoint_names_the_key() {
    let err = read_state_dict(fixture("nested_checkpoint.pth"), &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("`state_dict`") && err.contains("torch.save(model.state_dict(), path)"), "{err}");
}

#[test]
fn non_pytorch_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("legacy.pth");
    std::fs::write(&path, b"\x80\x02\x8a\x0alegacy pickle").unwrap();
    let err = read_state_dict(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("legacy.pth") && err.contains("not a zip-format"), "{err}");
    let err = read_state_dict(dir.path().join("absent.pth"), &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("absent.pth"), "{err}");
}

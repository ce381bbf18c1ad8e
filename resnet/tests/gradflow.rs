//! The gradient argument of He et al., measured: how the first layer's gradient changes with depth in a
//! plain network and its residual twin, without and with BatchNorm, and whether a deeper plain network
//! trains worse where its residual twin does not. Margins are wide (an order of magnitude where the
//! effect is exponential in depth); the numbers each run sees are printed.

use std::path::PathBuf;

use candle_core::Device;
use resnet::gradflow::{self, GradReport, NetSpec, TrainSpec, Wiring};

fn probe(depth: usize, batch_norm: bool) -> GradReport {
    let (x, y) = gradflow::gaussian_batch(16, 16, 10, 7, &Device::Cpu).unwrap();
    let spec = NetSpec {
        depth,
        width: 4,
        num_classes: 10,
        batch_norm,
        seed: 1,
    };
    let r = gradflow::measure(&spec, &x, &y).unwrap();
    eprintln!(
        "bn={batch_norm} depth={depth}: first-layer |dL/dW| plain {:.3e}, residual {:.3e}",
        r.first(Wiring::Plain),
        r.first(Wiring::Residual)
    );
    r
}

#[test]
fn without_batchnorm_the_plain_gradient_vanishes_and_the_residual_one_does_not() {
    let (shallow, deep) = (probe(8, false), probe(56, false));
    let plain = deep.first(Wiring::Plain) / shallow.first(Wiring::Plain);
    let residual = deep.first(Wiring::Residual) / shallow.first(Wiring::Residual);
    // Measured: plain shrinks ~40x from 8 to 56 layers; residual grows (the identity path carries it).
    assert!(
        plain < 0.1,
        "plain first-layer gradient only changed by {plain} from depth 8 to 56"
    );
    assert!(
        residual > 1.0,
        "residual first-layer gradient shrank by {residual} from depth 8 to 56"
    );
}

#[test]
fn with_batchnorm_the_deep_plain_gradient_explodes_instead() {
    let (shallow, deep) = (probe(8, true), probe(56, true));
    let plain = deep.first(Wiring::Plain) / shallow.first(Wiring::Plain);
    let residual = deep.first(Wiring::Residual) / shallow.first(Wiring::Residual);
    // Measured: plain grows ~2000x, residual ~16x. BatchNorm keeps the forward signal at unit scale, and
    // the plain network's backward pass multiplies up instead of down.
    assert!(
        plain > 100.0,
        "plain first-layer gradient grew only {plain}x from depth 8 to 56"
    );
    assert!(residual < plain / 10.0, "residual grew {residual}x, plain {plain}x");
    let last = deep.last_conv(Wiring::Plain);
    assert!(
        deep.first(Wiring::Plain) > 100.0 * last,
        "depth 56 plain: first layer not far above the last conv"
    );
}

/// Scikit-image's and scikit-learn's photos (scripts/fetch_test_data.sh), else a synthetic task.
fn task() -> gradflow::Task {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.data");
    let photos: Vec<PathBuf> = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
        .iter()
        .map(|f| data.join(f))
        .filter(|p| p.exists())
        .collect();
    if photos.len() == 4 {
        return gradflow::photo_task(&photos, 16, 150, 40, 0, &Device::Cpu).unwrap();
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "photos missing: run scripts/fetch_test_data.sh"
    );
    eprintln!("!!!!! photos missing (run scripts/fetch_test_data.sh): synthetic task instead !!!!!");
    gradflow::synthetic_task(4, 150, 40, 16, 0, &Device::Cpu).unwrap()
}

#[test]
fn the_deeper_plain_network_trains_worse_and_its_residual_twin_does_not() {
    let task = task();
    let ts = TrainSpec {
        steps: 100,
        ..TrainSpec::default()
    };
    let train = |depth: usize| {
        let spec = NetSpec {
            depth,
            width: 8,
            num_classes: task.classes.len(),
            batch_norm: true,
            seed: 0,
        };
        gradflow::train_pair(&spec, &task, &ts, &mut |_, _| {}).unwrap()
    };
    let [plain8, res8] = train(8);
    let [plain26, res26] = train(26);
    for c in [&plain8, &res8, &plain26, &res26] {
        eprintln!(
            "{}-{}: training loss {:.4} (start {:.4}), held-out acc {:.3}",
            c.wiring,
            c.depth,
            c.tail_loss(3),
            c.points[0].1,
            c.test_acc
        );
        assert!(c.tail_loss(3) < c.points[0].1, "{}-{} did not learn", c.wiring, c.depth);
    }
    // Degradation: the deeper plain net ends above the shallower one; the deep residual net ends below
    // the deep plain one.
    assert!(
        plain26.tail_loss(3) > plain8.tail_loss(3),
        "no degradation: plain-26 trained as well as plain-8"
    );
    assert!(
        res26.tail_loss(3) < 0.85 * plain26.tail_loss(3),
        "residual-26 did not beat plain-26"
    );
}

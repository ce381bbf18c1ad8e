//! Probe (temporary): prints gradient norms.
use candle_core::{Device, Tensor};
use resnet::gradflow::{self, NetSpec, Wiring};

#[test]
fn probe() {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1., (16, 3, 16, 16), &dev).unwrap();
    let y = Tensor::new(&[0u32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5], &dev).unwrap();
    for bn in [false, true] {
        for depth in [8, 20, 56] {
            let t = std::time::Instant::now();
            let spec = NetSpec { depth, width: 4, num_classes: 10, batch_norm: bn, seed: 1 };
            let r = gradflow::measure(&spec, &x, &y).unwrap();
            eprintln!("bn={bn} depth={depth}: plain first {:.3e} last {:.3e} loss {:.3} | residual first {:.3e} last {:.3e} loss {:.3}  ({:.2}s)",
                r.first(Wiring::Plain), r.last_conv(Wiring::Plain), r.plain_loss, r.first(Wiring::Residual), r.last_conv(Wiring::Residual), r.residual_loss, t.elapsed().as_secs_f32());
        }
    }
}

//! Transfer learning in a few lines: a pretrained network gets a new head for your classes and trains
//! on an ImageFolder (one sub-directory per class).
//!
//!     cargo run --release -p resnet --example finetune -- WEIGHTS.safetensors ARCH DATA_DIR OUT.safetensors
//!
//! e.g. `../shared/fixtures/cifar10-resnet/resnet20.safetensors resnet20 photos/ mine.safetensors`.
//! `zoo run OUT.safetensors img.png` then labels images with the folder's class names.

use candle_core::Device;
use resnet::train::{finetune, Dataset, FinetuneConfig, ImageFolder, Scope, TrainableResNet};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [weights, arch, data, out] = args.as_slice() else {
        anyhow::bail!("usage: finetune WEIGHTS.safetensors ARCH DATA_DIR OUT.safetensors");
    };
    let device = Device::Cpu;
    let mut net = TrainableResNet::from_checkpoint(weights, Some(arch.as_str()), &device)?;
    let folder = ImageFolder::open(data)?;
    net.replace_head(folder.classes().to_vec(), 0)?;
    let (train, val) = folder.split(0.2, 0);
    let train = Dataset::load(&train, &net.preprocess, true)?;
    let val = Dataset::load(&val, &net.preprocess, false)?;
    let cfg = FinetuneConfig {
        scope: Scope::Head,
        epochs: 5,
        ..Default::default()
    };
    for e in finetune(&net, &train, Some(&val), &cfg, &mut |_| {})? {
        println!(
            "epoch {}: train loss {:.4}, held-out accuracy {:.3}",
            e.epoch,
            e.train_loss,
            e.val_acc.unwrap_or(0.0)
        );
    }
    net.save(out)?;
    println!("wrote {out}");
    Ok(())
}

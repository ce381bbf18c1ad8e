//! Builds a ResNet-18 from its config with zero weights, runs one forward pass and prints the logits'
//! shape: the lean build works, not just compiles.

use candle_core::{DType, Device, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let net = resnet::ResNet::new(&resnet::variants::resnet18(), candle_nn::VarBuilder::zeros(DType::F32, &dev))?;
    let logits = net.forward(&Tensor::zeros((1, 3, 64, 64), DType::F32, &dev)?)?;
    println!("{:?}", logits.dims());
    Ok(())
}

//! Shared setup for the benchmarks: our ResNets and candle-transformers' built from the same weights, and
//! the hottest convolution shapes of ResNet-50 / ResNeXt-50.

use std::time::Instant;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use resnet::layers::{Conv, ConvSpec};
use resnet::ResNet;

/// The two networks the benchmarks compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    ResNet18,
    ResNet50,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::ResNet18, Arch::ResNet50];

    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet50 => "resnet50",
        }
    }
}

/// Our network and candle-transformers' one, sharing every weight.
pub struct Pair {
    pub ours: ResNet,
    pub theirs: candle_nn::Func<'static>,
}

/// Builds candle-transformers' model first (its constructors give conv weights a Kaiming init and BN
/// neutral statistics), then ours from the same `VarMap`: both use torchvision's names, so every tensor
/// is shared.
pub fn pair(arch: Arch, device: &Device) -> Result<Pair> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let theirs = match arch {
        Arch::ResNet18 => candle_transformers::models::resnet::resnet18(1000, vb.clone())?,
        Arch::ResNet50 => candle_transformers::models::resnet::resnet50(1000, vb.clone())?,
    };
    let cfg = match arch {
        Arch::ResNet18 => resnet::variants::resnet18(),
        Arch::ResNet50 => resnet::variants::resnet50(),
    };
    let ours = ResNet::new(&cfg, vb).map_err(candle_core::Error::wrap)?;
    Ok(Pair { ours, theirs })
}

/// A random ImageNet-sized batch.
pub fn input(batch: usize, device: &Device) -> Result<Tensor> {
    Tensor::randn(0f32, 1f32, (batch, 3, 224, 224), device)
}

/// One convolution shape worth benchmarking on its own.
#[derive(Debug, Clone, Copy)]
pub struct ConvCase {
    pub name: &'static str,
    pub spec: ConvSpec,
    /// Input height = width.
    pub size: usize,
}

impl ConvCase {
    /// Multiply-adds x 2 for one image.
    pub fn flops(&self) -> f64 {
        let o = self.spec.output_size(self.size) as f64;
        let s = self.spec;
        2.0 * o * o * s.out_channels as f64 * (s.in_channels / s.groups * s.kernel * s.kernel) as f64
    }
}

/// The hottest dense convolutions of ResNet-50 and a ResNeXt-50 grouped one.
pub fn conv_cases() -> Vec<ConvCase> {
    vec![
        ConvCase {
            name: "stem_7x7_3to64_s2_224",
            spec: ConvSpec::new(3, 64, 7, 2),
            size: 224,
        },
        ConvCase {
            name: "l1_3x3_64to64_56",
            spec: ConvSpec::new(64, 64, 3, 1),
            size: 56,
        },
        ConvCase {
            name: "l1_1x1_256to64_56",
            spec: ConvSpec::new(256, 64, 1, 1),
            size: 56,
        },
        ConvCase {
            name: "l1_1x1_64to256_56",
            spec: ConvSpec::new(64, 256, 1, 1),
            size: 56,
        },
        ConvCase {
            name: "l3_3x3_256to256_14",
            spec: ConvSpec::new(256, 256, 3, 1),
            size: 14,
        },
        ConvCase {
            name: "l3_1x1_1024to256_14",
            spec: ConvSpec::new(1024, 256, 1, 1),
            size: 14,
        },
        ConvCase {
            name: "l4_1x1_512to2048_7",
            spec: ConvSpec::new(512, 2048, 1, 1),
            size: 7,
        },
    ]
}

/// ResNeXt-50 32x4d layer1's 3x3: 128 channels in 32 groups of 4, at 56x56.
pub fn grouped_case() -> ConvCase {
    ConvCase {
        name: "resnext_l1_3x3_128_g32_56",
        spec: ConvSpec::new(128, 128, 3, 1).with_groups(32),
        size: 56,
    }
}

/// A convolution case ready to run: input, our [`Conv`], and the raw weight/bias for Candle's `conv2d`.
pub struct ConvBench {
    pub case: ConvCase,
    pub x: Tensor,
    pub ours: Conv,
    pub weight: Tensor,
    pub bias: Tensor,
}

impl ConvBench {
    pub fn new(case: ConvCase, batch: usize, device: &Device) -> Result<Self> {
        let s = case.spec;
        let x = Tensor::randn(0f32, 1f32, (batch, s.in_channels, case.size, case.size), device)?;
        let fan_in = (s.in_channels / s.groups * s.kernel * s.kernel) as f32;
        let weight = (Tensor::randn(0f32, 1f32, s.weight_shape(), device)? / fan_in.sqrt() as f64)?;
        let bias = Tensor::randn(0f32, 1f32, s.out_channels, device)?;
        let ours = Conv::new_inference(weight.clone(), Some(bias.clone()), s)?;
        Ok(Self {
            case,
            x,
            ours,
            weight,
            bias,
        })
    }

    /// Ours: conv + bias in one call.
    pub fn run_ours(&self) -> Result<Tensor> {
        self.ours.forward(&self.x)
    }

    /// Candle's `conv2d` (one conv per group when grouped) followed by a broadcast bias add.
    pub fn run_candle(&self) -> Result<Tensor> {
        let s = self.case.spec;
        let y = self.x.conv2d(&self.weight, s.padding, s.stride, 1, s.groups)?;
        y.broadcast_add(&self.bias.reshape((1, s.out_channels, 1, 1))?)
    }
}

/// Runs `f` once and returns the wall time in milliseconds.
pub fn time_ms<T>(mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    let t = Instant::now();
    let out = f()?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    drop(out);
    Ok(ms)
}

/// The median of `v` (sorted in place; the mean of the middle two for an even count, NaN for none).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// The command line of a bench binary: `--flag value` options.
pub struct Args(Vec<String>);

impl Args {
    /// This process's arguments.
    pub fn from_env() -> Self {
        Args(std::env::args().collect())
    }

    /// The value after `name`, if `name` is given.
    pub fn opt(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1))
            .cloned()
    }

    /// Whether the bare flag `name` is given.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }

    /// `name`'s value as a whole number (`default` if absent); an error naming the flag if it is not one.
    pub fn number(&self, name: &str, default: usize) -> Result<usize> {
        self.opt(name).map_or(Ok(default), |s| number(name, &s))
    }

    /// `name`'s comma-separated whole numbers (`default` if absent).
    pub fn numbers(&self, name: &str, default: &[usize]) -> Result<Vec<usize>> {
        match self.opt(name) {
            None => Ok(default.to_vec()),
            Some(s) => s.split(',').map(|v| number(name, v)).collect(),
        }
    }
}

/// The plan of a bench that times variants of one conv interleaved: `--rounds` (15), `--iters` per round (10, at
/// least 1) and `--batches` (1 and 8), after printing the engine, the plan and the header of its markdown table
/// (`columns`, the first row).
pub fn interleaved_plan(args: &Args, columns: &[&str]) -> Result<(usize, usize, Vec<usize>)> {
    let (rounds, iters) = (args.number("--rounds", 15)?, args.number("--iters", 10)?.max(1));
    let batches = args.numbers("--batches", &[1, 8])?;
    println!(
        "engine {}; {rounds} rounds of {iters} passes each, interleaved",
        resnet::layers::Engine::current().name()
    );
    println!("| {} |", columns.join(" | "));
    let rule: Vec<&str> = columns
        .iter()
        .enumerate()
        .map(|(i, _)| if i == 0 { "---" } else { "---:" })
        .collect();
    println!("|{}|", rule.join("|"));
    Ok((rounds, iters, batches))
}

/// `s` as a whole number, or an error naming `flag`.
fn number(flag: &str, s: &str) -> Result<usize> {
    s.trim()
        .parse()
        .map_err(|_| candle_core::Error::Msg(format!("{flag}: `{s}` is not a whole number")))
}

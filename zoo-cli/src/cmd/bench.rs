//! `zoo bench`: end-to-end latency, and with `--layers` where the time goes.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use candle_core::{Device, Tensor};
use resnet::layers::Engine;
use resnet::profile::{profile, OpRecord, Timing};
use resnet::ResNet;
use serde_json::json;

use crate::device::{parse_device, parse_dtype};

#[derive(clap::Args)]
pub struct Args {
    /// Architecture or pretrained name; random weights unless --weights is given.
    model: String,
    /// A checkpoint to time instead of random weights.
    #[arg(long)]
    weights: Option<String>,
    /// Images per forward pass (`--batch` is an older spelling).
    #[arg(long = "batch-size", alias = "batch", default_value = "1",
          value_parser = |s: &str| crate::args::in_range(s, 1, 256))]
    batch: usize,
    /// Input height and width.
    #[arg(long, default_value = "224", value_parser = crate::args::image_side)]
    size: usize,
    /// Untimed passes before measuring.
    #[arg(long, default_value = "3", value_parser = |s: &str| crate::args::in_range(s, 0, 10_000))]
    warmup: usize,
    /// Timed passes (the median and p90 are reported).
    #[arg(long, default_value = "10", value_parser = |s: &str| crate::args::in_range(s, 1, 100_000))]
    iters: usize,
    /// Time every layer: stem ops, each block, and inside blocks the shortcut and each conv (the last with the
    /// residual add and ReLU fused, as the forward pass runs it; a strided first conv and the projection
    /// shortcut that share their packed input as one op, `conv1+downsample`); on the CPU each op's GFLOP/s against the FMA
    /// peak of the moment and its least traffic per second against the memory bandwidth of the moment; with
    /// reduced precision (--dtype bf16/f16, --int8-calib) also each layer's error against f32.
    #[arg(long)]
    layers: bool,
    /// auto, cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "auto")]
    device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The CPU convolution engine: auto (the fastest this CPU runs), avx512, avx2 or portable (the `gemm`
    /// crate). `ZOO_CONV_ENGINE` sets the same for every command.
    #[arg(long, default_value = "auto", value_parser = |s: &str| parse_engine(s).map(|_| s.to_string()))]
    engine: String,
    /// Quantize the model to int8 before timing (post-training static quantization on the CPU), calibrated on
    /// the images of this folder (the first 64, sorted by name; the model's preprocessing). The int8 kernel
    /// is the fastest this CPU has (AMX-INT8, AVX512-VNNI) unless `ZOO_INT8_KERNEL` (amx, vnni, f32) names one.
    #[arg(long, value_name = "DIR")]
    int8_calib: Option<std::path::PathBuf>,
    /// How int8 calibration picks each layer's input range: minmax, percentile (99.99), percentile:P, entropy.
    #[arg(long, default_value = "percentile", value_parser = |s: &str| {
        resnet::layers::Calibration::from_name(s).map(|_| s.to_string()).ok_or("minmax, percentile, percentile:P or entropy")
    })]
    calib_method: String,
}

fn parse_engine(s: &str) -> Result<Option<Engine>, String> {
    if s == "auto" {
        return Ok(None);
    }
    let e = Engine::from_name(s).ok_or_else(|| format!("unknown engine {s:?}: auto, avx512, avx2 or portable"))?;
    if !e.is_supported() {
        return Err(format!("this CPU cannot run the {} engine", e.name()));
    }
    Ok(Some(e))
}

pub fn run(args: Args) -> Result<ExitCode> {
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(&args.dtype)?;
    let wanted = parse_engine(&args.engine).map_err(anyhow::Error::msg)?;
    if wanted.is_some() {
        Engine::set_default(wanted).map_err(anyhow::Error::msg)?;
    }
    let started = Instant::now();
    // A CLIP model: its image tower is timed like any ResNet, then its text tower.
    // With --int8-calib: the first calibration image, the input layer errors are measured on (random noise
    // lies outside the range the activations were calibrated on).
    let mut photo = None;
    let (image_tower, clip) = if crate::classifier::is_clip(&args.model) {
        let file = std::path::Path::new(&args.model).is_file();
        let clip = match &args.weights {
            Some(_) => crate::classifier::load_clip(&args.model, args.weights.as_deref(), &device, dtype)?.model,
            None if file => crate::classifier::load_clip(&args.model, None, &device, dtype)?.model,
            None => {
                let config = clip::ClipConfig::by_name(&args.model)?;
                clip::Clip::new(&config, candle_nn::VarBuilder::zeros(dtype, &device))?
            }
        };
        (clip.visual.clone(), Some(clip))
    } else {
        let loaded = crate::resolve::load_model(&args.model, args.weights.as_deref(), &device, dtype, true)?;
        match &args.int8_calib {
            Some(dir) => {
                if !device.is_cpu() || dtype != candle_core::DType::F32 {
                    anyhow::bail!("--int8-calib quantizes an f32 model on the CPU (--device cpu, --dtype f32)");
                }
                if let Some(first) = crate::cmd::quantize::calibration_images(dir, 1)?.first() {
                    photo = Some(loaded.preprocess_file(first)?.unsqueeze(0)?);
                }
                (
                    crate::cmd::quantize::quantize(&loaded, dir, &args.calib_method, 64)?.0,
                    None,
                )
            }
            None => (loaded.model, None),
        }
    };
    let load = started.elapsed();
    let model = &image_tower;
    // The dtype activations flow in: f32 on the CPU kernels even with bf16/f16 weights.
    let x = Tensor::randn(0f32, 1., (args.batch, 3, args.size, args.size), &device)?.to_dtype(model.compute_dtype())?;
    let sync = || device.synchronize();
    let memory = first_pass_memory(|| {
        model.forward(&x)?;
        sync()
    })?;
    for _ in 1..args.warmup {
        model.forward(&x)?;
    }
    sync()?;
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters.max(1) {
        let start = Instant::now();
        model.forward(&x)?;
        sync()?;
        times.push(start.elapsed());
    }
    times.sort();
    let median = times[times.len() / 2];
    let p90 = times[(times.len() * 9 / 10).min(times.len() - 1)];
    let ops = profile(
        model,
        &x,
        &Timing {
            repeats: if args.layers { args.iters.max(1) } else { 1 },
            sync: &sync,
        },
    )?;
    let flops = 2 * ops.iter().map(|o| o.macs).sum::<u64>();
    // With reduced-precision weights on the CPU (bf16/f16, or int8 quantized here from the f32 network):
    // each layer's error against the same network in f32.
    let reduced = dtype != candle_core::DType::F32 || args.int8_calib.is_some();
    let errors = match args.layers && device.is_cpu() && reduced && clip.is_none() {
        true => Some(layer_errors(&args, &device, model, photo.as_ref().unwrap_or(&x))?),
        false => None,
    };
    // The custom CPU engines serve f32 on the CPU; judge their layers against the FMA peak of the moment.
    let cpu_f32 = device.is_cpu() && dtype == candle_core::DType::F32;
    let engine = device.is_cpu().then(Engine::current);
    let peak = if args.layers && cpu_f32 {
        resnet::layers::engine::fma_peak(rayon::current_num_threads(), 300)
    } else {
        None
    };
    let bandwidth = (args.layers && device.is_cpu()).then(|| Bandwidth::measure(&ops));
    let yardsticks = Yardsticks { peak, bandwidth };
    // Held bytes: int8 convs hold one byte per weight (their scales and biases are counted as f32).
    let int8_weights: usize = model
        .conv_layers()
        .iter()
        .filter(|(_, c)| c.conv().is_int8())
        .map(|(_, c)| c.conv().spec().out_channels * c.conv().spec().depth())
        .sum();
    let weight_bytes = (model.num_params() * dtype.size_in_bytes() - int8_weights * (dtype.size_in_bytes() - 1)) as u64;
    let report = Report {
        kernels: conv_kernels(model),
        engine,
        yardsticks,
        model: &args.model,
        batch: args.batch,
        median,
        p90,
        flops,
        load,
        weight_bytes,
        memory,
    };
    let text = clip.as_ref().map(|c| bench_text(c, &args)).transpose()?;
    if args.json {
        let mut j = report.json(args.layers.then_some(&ops[..]), errors.as_ref());
        if let Some(t) = &text {
            j["text_tower"] = t.json(args.layers);
        }
        crate::outln!("{j}")?;
    } else {
        report.print(&device)?;
        if args.layers {
            print_layers(&ops, yardsticks, errors.as_ref())?;
        }
        if let Some(t) = &text {
            t.print(args.layers)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A CLIP text tower's timing: `--batch` prompts of [`TEXT_PROMPT`]'s length.
struct TextReport {
    batch: usize,
    tokens: usize,
    median: Duration,
    ops: Vec<OpRecord>,
}

/// The prompt the text tower is timed on (the tower stops at the batch's last end token, so the length of the
/// prompt sets the work).
const TEXT_PROMPT: &str = "a photo of a cat.";

fn bench_text(clip: &clip::Clip, args: &Args) -> Result<TextReport> {
    let tokenizer = clip::ClipTokenizer::openai()?.with_context_length(clip.config().text.context_length)?;
    let prompts = vec![TEXT_PROMPT; args.batch];
    let tokens = tokenizer.tokenize(&prompts, clip.device())?;
    let sync = || clip.device().synchronize();
    for _ in 0..args.warmup.max(1) {
        clip.encode_text(&tokens)?;
    }
    sync()?;
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters.max(1) {
        let start = Instant::now();
        clip.encode_text(&tokens)?;
        sync()?;
        times.push(start.elapsed());
    }
    times.sort();
    let timing = Timing {
        repeats: if args.layers { args.iters.max(1) } else { 1 },
        sync: &sync,
    };
    let ops = clip::profile::profile_text(&clip.text, &tokens, &timing)?;
    Ok(TextReport {
        batch: args.batch,
        tokens: tokenizer.encode(TEXT_PROMPT)?.len(),
        median: times[times.len() / 2],
        ops,
    })
}

impl TextReport {
    fn flops(&self) -> u64 {
        2 * self.ops.iter().map(|o| o.macs).sum::<u64>()
    }

    fn json(&self, layers: bool) -> serde_json::Value {
        let ops: Vec<_> = if layers {
            self.ops.iter().map(|o| op_json(o, Yardsticks::default())).collect()
        } else {
            Vec::new()
        };
        json!({"batch": self.batch, "tokens": self.tokens, "median_ms": ms(self.median),
               "texts_per_s": self.batch as f64 / self.median.as_secs_f64(),
               "gflops": self.flops() as f64 / self.median.as_secs_f64() / 1e9, "layers": ops})
    }

    fn print(&self, layers: bool) -> Result<()> {
        crate::outln!(
            "\ntext tower batch {} ({} tokens per text with start and end): median {:.2} ms, {:.1} texts/s, {:.1} \
             GFLOP/s ({:.3} GFLOP per pass)",
            self.batch,
            self.tokens,
            ms(self.median),
            self.batch as f64 / self.median.as_secs_f64(),
            self.flops() as f64 / self.median.as_secs_f64() / 1e9,
            self.flops() as f64 / 1e9
        )?;
        if layers {
            print_layers(&self.ops, Yardsticks::default(), None)?;
        }
        Ok(())
    }
}

/// The convolutions by the dtype their weights are held in and, for bf16, the kernel that multiplies them; f32
/// convs lowered to Winograd or run direct apart.
fn conv_kernels(model: &ResNet) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (_, c) in model.conv_layers() {
        let c = c.conv();
        let key = match (c.bf16_kernel(), c.int8_kernel()) {
            (_, Some(k)) if k.is_integer() => format!("int8 on {}", k.name()),
            (_, Some(_)) => "int8 dequantized to F32".to_string(),
            (Some(k), _) => format!("{:?} on {}", c.dtype(), k.name()),
            // f32 convs lowered to Winograd's F(2x2, 3x3) or run direct (`ZOO_CONV_LOWERING`) are counted apart,
            // and those held for NCHW16c (`ZOO_LAYOUT`).
            (None, _) => {
                let layout = match c.layout() {
                    resnet::layers::Layout::Nchw16c => " nchw16c",
                    resnet::layers::Layout::Nchw => "",
                };
                match c.lowering() {
                    Some(l) if l != resnet::layers::Lowering::Gemm => format!("{:?}{layout} {}", c.dtype(), l.name()),
                    _ => format!("{:?}{layout}", c.dtype()),
                }
            }
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// Each op's output error against the same network in f32 (the f32 model loaded beside it, the same input):
/// `||y - y_f32|| / ||y_f32||` over the batch's first image, accumulated from the input on (the error a layer
/// hands on, not only the one it adds). Ops whose f32 output is all zero (random-free zero weights) have none.
/// For an int8 model quantized here, `x` is the first calibration photo (random noise would lie outside
/// the calibrated ranges and overstate the error).
fn layer_errors(args: &Args, device: &Device, model: &ResNet, x: &Tensor) -> Result<HashMap<String, f64>> {
    use candle_core::DType;
    let full = crate::resolve::load_model(&args.model, args.weights.as_deref(), device, DType::F32, true)?.model;
    let sync = || Ok(());
    let once = Timing {
        repeats: 1,
        sync: &sync,
    };
    let first = |y: &Tensor| -> candle_core::Result<Vec<f32>> {
        y.narrow(0, 0, 1)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
    };
    let mut reference = HashMap::new();
    resnet::profile::profile_observed(&full, &x.to_dtype(DType::F32)?, &once, &mut |name, y| {
        if let Ok(v) = first(y) {
            reference.insert(name.to_string(), v);
        }
    })?;
    let mut errors = HashMap::new();
    resnet::profile::profile_observed(model, x, &once, &mut |name, y| {
        if let (Some(r), Ok(v)) = (reference.get(name), first(y)) {
            let diff: f64 = r
                .iter()
                .zip(&v)
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                .sum();
            let norm: f64 = r.iter().map(|a| f64::from(*a).powi(2)).sum();
            if norm > 0.0 && r.len() == v.len() {
                errors.insert(name.to_string(), (diff / norm).sqrt());
            }
        }
    })?;
    Ok(errors)
}

/// What an op's speed is judged against (`--layers` on the CPU): the FMA peak of the moment (f32) and the
/// memory bandwidth of the moment.
#[derive(Clone, Copy, Default)]
struct Yardsticks {
    /// GFLOP/s of the pool's threads running FMAs on registers (`engine::fma_peak`).
    peak: Option<f64>,
    bandwidth: Option<Bandwidth>,
}

/// The pool's threads streaming a working set as large as the traffic of the run's largest op
/// (`engine::memory_bandwidth`): what the ops that move more bytes than they multiply can reach.
#[derive(Clone, Copy)]
struct Bandwidth {
    /// GB/s read and written.
    gbps: f64,
    /// The working set it was measured on, bytes.
    working_set: u64,
}

impl Bandwidth {
    /// Smallest and largest working set measured: beyond an L2 on the small side, a bounded allocation on
    /// the large one.
    const WORKING_SET: (u64, u64) = (8 << 20, 512 << 20);

    fn measure(ops: &[OpRecord]) -> Bandwidth {
        let largest = ops.iter().map(|o| o.bytes).max().unwrap_or(0);
        let working_set = largest.clamp(Self::WORKING_SET.0, Self::WORKING_SET.1);
        let gbps = resnet::layers::engine::memory_bandwidth(rayon::current_num_threads(), working_set as usize, 300);
        Bandwidth { gbps, working_set }
    }
}

/// An op's FLOP/s over the FMA peak, and its bytes per second over the bandwidth (None where not measured or
/// not counted).
fn shares(o: &OpRecord, y: Yardsticks) -> (Option<f64>, Option<f64>, Option<f64>) {
    let t = o.median.as_secs_f64();
    let peak = y
        .peak
        .filter(|_| o.macs > 0 && t > 0.0)
        .map(|p| 2.0 * o.macs as f64 / t / 1e9 / p);
    let gbps = (o.bytes > 0 && t > 0.0).then(|| o.bytes as f64 / t / 1e9);
    let bw = gbps.zip(y.bandwidth).map(|(g, b)| g / b.gbps);
    (peak, gbps, bw)
}

fn op_json(o: &OpRecord, y: Yardsticks) -> serde_json::Value {
    let (peak, gbps, bw) = shares(o, y);
    json!({"name": o.name, "shape": o.shape, "params": o.params, "flops": 2 * o.macs, "bytes": o.bytes,
           "median_ms": ms(o.median), "peak_share": peak, "gbytes_per_s": gbps, "bandwidth_share": bw})
}

/// Resident memory around the first forward pass: before it, and its peak (None off Linux).
#[derive(Clone, Copy)]
struct PassMemory {
    before: u64,
    peak: u64,
}

fn first_pass_memory(pass: impl FnOnce() -> candle_core::Result<()>) -> Result<Option<PassMemory>> {
    // What calibrating and quantizing (`--int8-calib`) freed, as after a plain load.
    crate::memory::release_freed();
    let before = crate::memory::reset_peak().then(crate::memory::resident).flatten();
    pass()?;
    Ok(before.zip(crate::memory::resident()).map(|(b, a)| PassMemory {
        before: b.now,
        peak: a.peak,
    }))
}

struct Report<'a> {
    /// The CPU convolution engine.
    engine: Option<Engine>,
    /// How many convolutions hold their weights in each (dtype, kernel), e.g. `bf16 on amx`: 53.
    kernels: BTreeMap<String, usize>,
    /// The FMA peak (f32) and the memory bandwidth measured right after the run (with `--layers` on the CPU).
    yardsticks: Yardsticks,
    model: &'a str,
    batch: usize,
    median: Duration,
    p90: Duration,
    flops: u64,
    /// Building the model: reading (memory-mapping) the checkpoint, folding BN, laying out the weights.
    load: Duration,
    /// The checkpoint's parameters in the compute dtype.
    weight_bytes: u64,
    memory: Option<PassMemory>,
}

impl Report<'_> {
    fn images_per_s(&self) -> f64 {
        self.batch as f64 / self.median.as_secs_f64()
    }

    fn gflops(&self) -> f64 {
        self.flops as f64 / self.median.as_secs_f64() / 1e9
    }

    fn json(&self, layers: Option<&[OpRecord]>, errors: Option<&HashMap<String, f64>>) -> serde_json::Value {
        let layers: Vec<_> = layers
            .unwrap_or(&[])
            .iter()
            .map(|o| {
                let mut j = op_json(o, self.yardsticks);
                if let Some(e) = errors {
                    j["rel_error_vs_f32"] = json!(e.get(&o.name));
                }
                j
            })
            .collect();
        let memory = self
            .memory
            .map(|m| json!({"before_forward_bytes": m.before, "peak_forward_bytes": m.peak}));
        json!({"model": self.model, "batch": self.batch, "median_ms": ms(self.median), "p90_ms": ms(self.p90),
               "images_per_s": self.images_per_s(), "gflops": self.gflops(), "load_ms": ms(self.load),
               "weight_bytes": self.weight_bytes, "memory": memory, "layers": layers,
               "engine": self.engine.map(Engine::name), "fma_peak_gflops": self.yardsticks.peak,
               "memory_bandwidth_gbps": self.yardsticks.bandwidth.map(|b| b.gbps),
               "bandwidth_working_set_bytes": self.yardsticks.bandwidth.map(|b| b.working_set),
               "conv_weights": self.kernels})
    }

    fn print(&self, device: &Device) -> Result<()> {
        crate::outln!(
            "{} batch {} on {:?}: median {:.2} ms, p90 {:.2} ms, {:.1} images/s, {:.1} GFLOP/s ({:.2} GFLOP per pass)",
            self.model,
            self.batch,
            device.location(),
            ms(self.median),
            ms(self.p90),
            self.images_per_s(),
            self.gflops(),
            self.flops as f64 / 1e9
        )?;
        if let Some(e) = self.engine {
            match self.yardsticks.peak {
                Some(p) => crate::outln!(
                    "conv engine {}; FMA peak of the moment {p:.1} GFLOP/s on {} threads",
                    e.name(),
                    rayon::current_num_threads()
                )?,
                None => crate::outln!("conv engine {}", e.name())?,
            }
            if let Some(b) = self.yardsticks.bandwidth {
                crate::outln!(
                    "memory bandwidth of the moment {:.1} GB/s read and written on {} threads ({:.0} MB working set, \
                     the largest op's traffic)",
                    b.gbps,
                    rayon::current_num_threads(),
                    b.working_set as f64 / 1e6
                )?;
            }
            if !self.kernels.keys().all(|k| k == "F32") {
                let held: Vec<String> = self.kernels.iter().map(|(k, n)| format!("{n} {k}")).collect();
                crate::outln!("conv weights: {}", held.join(", "))?;
            }
        }
        let mb = |b: u64| b as f64 / 1e6;
        let load = format!("load {:.0} ms, weights {:.1} MB", ms(self.load), mb(self.weight_bytes));
        match self.memory {
            Some(m) => crate::outln!(
                "{load}; resident before the first forward {:.1} MB, peak during it {:.1} MB (+{:.1} MB)",
                mb(m.before),
                mb(m.peak),
                mb(m.peak.saturating_sub(m.before))
            ),
            None => crate::outln!("{load}"),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The block a record belongs to (`layer1.0`), or None for stem and head ops.
fn block_of(name: &str) -> Option<&str> {
    let mut dots = name.match_indices('.');
    let second = dots.nth(1)?.0;
    name.starts_with("layer").then(|| &name[..second])
}

/// The per-op table; with the FMA peak of the moment, each op's GFLOP/s as a share of it ("peak"); with the
/// memory bandwidth of the moment, each op's least traffic per second ("GB/s", see [`OpRecord::bytes`]) and
/// its share of that bandwidth ("bw"); with reduced-precision weights, each op's output error against f32
/// ("vs f32", see [`layer_errors`]). A block's row sums its ops.
fn print_layers(ops: &[OpRecord], y: Yardsticks, errors: Option<&HashMap<String, f64>>) -> Result<()> {
    let total: f64 = ops.iter().map(|o| ms(o.median)).sum();
    let err_head = if errors.is_some() {
        format!(" {:>8}", "vs f32")
    } else {
        String::new()
    };
    let bw_head = if y.bandwidth.is_some() {
        format!(" {:>7} {:>5}", "GB/s", "bw")
    } else {
        String::new()
    };
    crate::outln!(
        "\n{:<24} {:>20} {:>10} {:>9} {:>9} {:>6} {:>8} {:>6}{bw_head}{err_head}",
        "layer",
        "output",
        "params",
        "MFLOP",
        "ms",
        "share",
        "GFLOP/s",
        "peak"
    )?;
    // `key`: the op whose output the row's error is read at (a block's: its add). `o`: the row's op, or a
    // block's sum of them.
    let row = |name: &str, key: &str, o: &OpRecord| {
        let t = ms(o.median);
        let flops = 2 * o.macs;
        let (peak, gbps, bw) = shares(o, y);
        let gf = (t > 0.0 && flops > 0).then(|| flops as f64 / t / 1e6);
        let gf = gf.map_or("-".into(), |r| format!("{r:.1}"));
        let peak = peak.map_or("-".into(), |p| format!("{:.0}%", 100.0 * p));
        let bw = match y.bandwidth {
            Some(_) => format!(
                " {:>7} {:>5}",
                gbps.map_or("-".into(), |g| format!("{g:.1}")),
                bw.map_or("-".into(), |b| format!("{:.0}%", 100.0 * b))
            ),
            None => String::new(),
        };
        let err = match errors {
            Some(e) => format!(" {:>8}", e.get(key).map_or("-".into(), |v| format!("{v:.1e}"))),
            None => String::new(),
        };
        crate::outln!(
            "{name:<24} {:>20} {:>10} {:>9.1} {t:>9.3} {:>5.1}% {gf:>8} {peak:>6}{bw}{err}",
            format!("{:?}", o.shape),
            o.params,
            flops as f64 / 1e6,
            100.0 * t / total
        )
    };
    let mut i = 0;
    while i < ops.len() {
        let Some(block) = block_of(&ops[i].name) else {
            row(&ops[i].name, &ops[i].name, &ops[i])?;
            i += 1;
            continue;
        };
        let end = i + ops[i..].iter().take_while(|o| block_of(&o.name) == Some(block)).count();
        let inner = &ops[i..end];
        let last = &inner[inner.len() - 1];
        let sum = OpRecord {
            name: block.to_string(),
            kind: last.kind,
            shape: last.shape.clone(),
            params: inner.iter().map(|o| o.params).sum(),
            macs: inner.iter().map(|o| o.macs).sum(),
            bytes: inner.iter().map(|o| o.bytes).sum(),
            median: inner.iter().map(|o| o.median).sum(),
        };
        row(block, &last.name, &sum)?;
        for o in inner {
            row(&format!("  {}", &o.name[block.len() + 1..]), &o.name, o)?;
        }
        i = end;
    }
    crate::outln!("{:<24} {:>20} {:>10} {:>9} {total:>9.3}", "sum of ops", "", "", "")
}

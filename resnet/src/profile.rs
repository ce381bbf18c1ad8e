//! Op-by-op execution of a network, for per-layer reports (`zoo info`, `zoo bench --layers`).
//!
//! The walk follows the same modules the forward pass uses, one op at a time: each stem conv, the
//! max-pool (CLIP: average pool), and inside each block the shortcut, then every conv (with its ReLU) and
//! CLIP's anti-aliasing average pool, the last conv with the residual add fused in as the forward pass
//! runs it; then the head (`fc`, or CLIP's `attnpool`). Ops the forward pass runs as one kernel are one op: the
//! stem's last conv and its max-pool (`conv1+maxpool`), a block's first conv and the projection shortcut on one
//! packed input (`layer2.0.conv1+downsample`, see [`ResidualBlock::shared_first`]). A network that runs its blocks
//! on NCHW16c ([`ResNet::block_layout`]) does here too, with the two conversions as ops (`to_nchw16c`,
//! `to_nchw`).

use std::time::{Duration, Instant};

use candle_core::{Module, ModuleT, Result, Tensor};

use crate::block::ResidualBlock;
use crate::head::Head;
use crate::layers::{pool, ConvBn};
use crate::model::ResNet;
use crate::shortcut::Shortcut;

/// What one op is, for grouping in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A convolution (with its BN folded, and its ReLU); a block's last conv also adds the shortcut before
    /// the ReLU, fused as in the forward pass.
    Conv,
    /// A pooling op.
    Pool,
    /// A block's shortcut.
    Shortcut,
    /// The head.
    Head,
    /// Token lookup and positional embedding (CLIP's text tower).
    Embedding,
    /// Self-attention with its residual add (CLIP's text tower).
    Attention,
    /// MLP with its residual add (CLIP's text tower).
    Mlp,
    /// LayerNorm (CLIP's text tower).
    Norm,
    /// A change of activation layout (NCHW to NCHW16c and back, see [`crate::layers::blocked`]).
    Reorder,
}

/// One executed op.
#[derive(Debug, Clone)]
pub struct OpRecord {
    /// Checkpoint-style name: `conv1`, `layer1.0.conv2`, `layer2.0.downsample`.
    pub name: String,
    /// What the op is.
    pub kind: OpKind,
    /// Output shape.
    pub shape: Vec<usize>,
    /// Learnable parameters (as the checkpoint stores them).
    pub params: usize,
    /// Multiply-accumulates (a FLOP count is twice this).
    pub macs: u64,
    /// The least memory traffic the op can have, in bytes: its input(s), weights and bias read once and its
    /// output written once (0 where not counted). Over the time, the bandwidth a memory-bound op needs.
    pub bytes: u64,
    /// Median over the timed repetitions.
    pub median: Duration,
}

/// How ops are timed: how often each is repeated, and how to wait for the device.
pub struct Timing<'a> {
    /// Timed repetitions of each op (at least one).
    pub repeats: usize,
    /// Blocks until queued work has finished (a no-op on CPU), so GPU times are true.
    pub sync: &'a dyn Fn() -> Result<()>,
}

/// Runs `model` op by op on `x`; returns one record per op (the classifier last). On the CPU the walk runs as
/// the forward pass does, as one [`crate::pass::pass`]: with fewer images than threads the pool's other
/// threads are kept at hand between ops, where outside a pass each op would start on one thread and wait
/// 50-100 µs for the second (a 0.07 ms conv timed at 0.1 ms).
pub fn profile(model: &ResNet, x: &Tensor, timing: &Timing) -> Result<Vec<OpRecord>> {
    if x.device().is_cpu() {
        let repeats = timing.repeats;
        // Waiting for the device is a no-op on the CPU.
        let cpu = || Ok(());
        return crate::pass::pass(x.dim(0).unwrap_or(1), || {
            profile_observed(model, x, &Timing { repeats, sync: &cpu }, &mut |_, _| {})
        });
    }
    profile_observed(model, x, timing, &mut |_, _| {})
}

/// [`profile`], handing each op's name and output to `observe` as it goes (how `zoo bench --layers
/// --dtype bf16` measures each layer's error against the f32 network).
pub fn profile_observed(
    model: &ResNet,
    x: &Tensor,
    timing: &Timing,
    observe: &mut dyn FnMut(&str, &Tensor),
) -> Result<Vec<OpRecord>> {
    let mut out = Vec::new();
    let mut x = x.clone();
    let convs: Vec<_> = model.stem().conv_layers().collect();
    let mut pooled = false;
    for (i, &(name, conv)) in convs.iter().enumerate() {
        // The stem's last conv and the max-pool, where the forward pass runs them as one kernel: one op.
        if i + 1 == convs.len() && model.stem().has_max_pool() {
            if let Some(y) = conv.forward_pooled(&x, true, false)? {
                let fused = format!("{name}+maxpool");
                let s = conv.conv().spec();
                let (n, h, w) = (x.dim(0)?, x.dim(2)?, x.dim(3)?);
                let conv_out = [n, s.out_channels, s.output_size(h), s.output_size(w)];
                let input = x.clone();
                x = record(
                    &mut out,
                    &fused,
                    OpKind::Conv,
                    conv.num_params(),
                    conv_macs(conv, &conv_out),
                    timing,
                    || Ok(conv.forward_pooled(&x, true, false)?.unwrap_or_else(|| y.clone())),
                )?;
                set_bytes(&mut out, traffic(&[&input], &x, conv_weight_bytes(conv)));
                // Its output is the pool's (how `zoo bench --layers --dtype bf16` finds the f32 pool's).
                observe(&fused, &x);
                observe("maxpool", &x);
                pooled = true;
                continue;
            }
        }
        x = conv_op(&mut out, name, conv, &x, None, true, timing)?;
        observe(name, &x);
    }
    if model.stem().has_max_pool() && !pooled {
        let input = x.clone();
        x = record(&mut out, "maxpool", OpKind::Pool, 0, 0, timing, || {
            pool::max_pool_3x3_s2(&x)
        })?;
        set_bytes(&mut out, traffic(&[&input], &x, 0));
        observe("maxpool", &x);
    }
    if model.stem().has_avg_pool() {
        let input = x.clone();
        x = record(&mut out, "avgpool", OpKind::Pool, 0, 0, timing, || {
            pool::avg_pool(&x, 2)
        })?;
        set_bytes(&mut out, traffic(&[&input], &x, 0));
        observe("avgpool", &x);
    }
    // As the forward pass: the blocks on NCHW16c where the network runs them there.
    let blocked = x.device().is_cpu()
        && x.dtype() == candle_core::DType::F32
        && model.block_layout() == crate::layers::Layout::Nchw16c;
    // A conversion between the layouts, as an op.
    let reorder = |out: &mut Vec<OpRecord>, name: &str, x: &Tensor, f: fn(&Tensor) -> Result<Tensor>| {
        let y = record(out, name, OpKind::Reorder, 0, 0, timing, || f(x))?;
        set_bytes(out, traffic(&[x], &y, 0));
        Ok::<_, candle_core::Error>(y)
    };
    if blocked {
        x = reorder(&mut out, "to_nchw16c", &x, crate::layers::blocked::to_blocked)?;
    }
    for (name, block) in model.blocks() {
        x = block_ops(&mut out, &name, block, &x, timing, observe)?;
    }
    if blocked {
        x = reorder(&mut out, "to_nchw", &x, crate::layers::blocked::from_blocked)?;
    }
    match model.head() {
        Some(Head::Linear(head)) => {
            let macs = (x.dim(0)? * x.dim(1)? * head.num_classes) as u64;
            let y = record(&mut out, "fc", OpKind::Head, head.num_params(), macs, timing, || {
                head.forward(&x)
            })?;
            let weights = head.num_params() * x.dtype().size_in_bytes();
            set_bytes(&mut out, traffic(&[&x], &y, weights as u64));
            observe("fc", &y);
        }
        Some(Head::AttentionPool(pool)) => {
            let macs = pool.macs(x.dim(0)?);
            record(
                &mut out,
                "attnpool",
                OpKind::Head,
                pool.num_params(),
                macs,
                timing,
                || pool.forward(&x),
            )?;
        }
        None => {}
    }
    Ok(out)
}

fn block_ops(
    out: &mut Vec<OpRecord>,
    prefix: &str,
    block: &ResidualBlock,
    x: &Tensor,
    t: &Timing,
    observe: &mut dyn FnMut(&str, &Tensor),
) -> Result<Tensor> {
    let layers = block.residual.layers();
    // Where the forward pass runs the first conv and the projection shortcut on one packed input, one op.
    if let Some((first, short)) = shared_first_op(out, prefix, block, x, t)? {
        observe(&format!("{prefix}.downsample"), &short);
        observe(&format!("{prefix}.{}", layers[0].0), &first);
        observe(&format!("{prefix}.{}+downsample", layers[0].0), &first);
        return rest_ops(out, prefix, block, first, &short, 1, t, observe);
    }
    // The shortcut first, as the forward pass runs it: the last conv adds it before its ReLU.
    let sc = &block.shortcut;
    let short = match sc {
        Shortcut::Identity => x.clone(),
        _ => {
            let name = format!("{prefix}.downsample");
            let s = record(out, &name, OpKind::Shortcut, sc.num_params(), 0, t, || {
                sc.forward_t(x, false)
            })?;
            if let Some(op) = out.last_mut() {
                op.macs = shortcut_macs(sc, &s);
                op.bytes = traffic(&[x], &s, shortcut_weight_bytes(sc));
            }
            observe(&name, &s);
            s
        }
    };
    rest_ops(out, prefix, block, x.clone(), &short, 0, t, observe)
}

/// The block's first conv and its projection shortcut as one op, `{prefix}.conv1+downsample`, where the
/// forward pass runs them on one packed input ([`ResidualBlock::shared_first`]): their outputs; else `None`,
/// nothing recorded.
fn shared_first_op(
    out: &mut Vec<OpRecord>,
    prefix: &str,
    block: &ResidualBlock,
    x: &Tensor,
    t: &Timing,
) -> Result<Option<(Tensor, Tensor)>> {
    let (Some(_), Shortcut::Projection(proj)) = (block.shared_first(x, false)?, &block.shortcut) else {
        return Ok(None);
    };
    let (name, conv) = block.residual.layers()[0];
    let short = std::cell::RefCell::new(None);
    let params = conv.num_params() + proj.num_params();
    let y = record(
        out,
        &format!("{prefix}.{name}+downsample"),
        OpKind::Conv,
        params,
        0,
        t,
        || {
            let (y, s) = block
                .shared_first(x, false)?
                .ok_or_else(|| candle_core::Error::Msg("the shared convs stopped sharing".into()))?;
            short.replace(Some(s));
            Ok(y)
        },
    )?;
    let Some(short) = short.into_inner() else {
        return Ok(None);
    };
    if let Some(op) = out.last_mut() {
        op.macs = conv_macs(conv, y.dims()) + conv_macs(proj, short.dims());
        op.bytes = traffic(&[x], &y, conv_weight_bytes(conv)) + traffic(&[], &short, conv_weight_bytes(proj));
    }
    Ok(Some((y, short)))
}

/// The block's convs from `from` on (`y`: the input of that conv), the last adding `short`.
#[allow(clippy::too_many_arguments)]
fn rest_ops(
    out: &mut Vec<OpRecord>,
    prefix: &str,
    block: &ResidualBlock,
    mut y: Tensor,
    short: &Tensor,
    from: usize,
    t: &Timing,
    observe: &mut dyn FnMut(&str, &Tensor),
) -> Result<Tensor> {
    let layers = block.residual.layers();
    for (i, (name, conv)) in layers.iter().enumerate().skip(from) {
        let last = i + 1 == layers.len();
        let window = block.residual.pool_before_last();
        if last && window > 1 {
            let input = y.clone();
            y = record(out, &format!("{prefix}.avgpool"), OpKind::Pool, 0, 0, t, || {
                pool::avg_pool(&y, window)
            })?;
            set_bytes(out, traffic(&[&input], &y, 0));
            observe(&format!("{prefix}.avgpool"), &y);
        }
        let residual = if last { Some(short) } else { None };
        y = conv_op(out, &format!("{prefix}.{name}"), conv, &y, residual, true, t)?;
        observe(&format!("{prefix}.{name}"), &y);
    }
    Ok(y)
}

/// Sets the bytes of the op just recorded.
fn set_bytes(out: &mut [OpRecord], bytes: u64) {
    if let Some(op) = out.last_mut() {
        op.bytes = bytes;
    }
}

/// [`OpRecord::bytes`]: every input read once, the output written once, and `weights` bytes.
fn traffic(inputs: &[&Tensor], output: &Tensor, weights: u64) -> u64 {
    let bytes = |t: &Tensor| (t.elem_count() * t.dtype().size_in_bytes()) as u64;
    inputs.iter().map(|t| bytes(t)).sum::<u64>() + bytes(output) + weights
}

/// The bytes a conv's weights and bias take as it holds them (int8 weights: one byte each; the bias in f32).
fn conv_weight_bytes(conv: &ConvBn) -> u64 {
    let c = conv.conv();
    let s = c.spec();
    let per_weight = if c.is_int8() { 1 } else { c.dtype().size_in_bytes() };
    (s.out_channels * (s.depth() * per_weight + 4)) as u64
}

fn shortcut_weight_bytes(sc: &Shortcut) -> u64 {
    match sc {
        Shortcut::Projection(c) => conv_weight_bytes(c),
        Shortcut::AvgDown(a) => conv_weight_bytes(&a.proj),
        Shortcut::PooledProjection(p) => conv_weight_bytes(&p.proj),
        Shortcut::Identity | Shortcut::ZeroPad(_) => 0,
    }
}

fn shortcut_macs(sc: &Shortcut, out: &Tensor) -> u64 {
    match sc {
        Shortcut::Projection(c) => conv_macs(c, out.dims()),
        Shortcut::AvgDown(a) => conv_macs(&a.proj, out.dims()),
        Shortcut::PooledProjection(p) => conv_macs(&p.proj, out.dims()),
        _ => 0,
    }
}

fn conv_macs(conv: &ConvBn, out_shape: &[usize]) -> u64 {
    let s = conv.conv().spec();
    let per_output = (s.in_channels / s.groups * s.kernel * s.kernel) as u64;
    out_shape.iter().product::<usize>() as u64 * per_output
}

/// One conv with its BN, the `residual` add where it ends a block, and its ReLU, fused as the forward pass
/// runs them.
fn conv_op(
    out: &mut Vec<OpRecord>,
    name: &str,
    conv: &ConvBn,
    x: &Tensor,
    residual: Option<&Tensor>,
    relu: bool,
    t: &Timing,
) -> Result<Tensor> {
    let y = record(out, name, OpKind::Conv, conv.num_params(), 0, t, || {
        conv.forward_fused(x, residual, relu, false)
    })?;
    if let Some(op) = out.last_mut() {
        op.macs = conv_macs(conv, y.dims());
        let inputs: Vec<&Tensor> = std::iter::once(x).chain(residual).collect();
        op.bytes = traffic(&inputs, &y, conv_weight_bytes(conv));
    }
    Ok(y)
}

/// With more than one repeat, each op is also run until its timed runs add up to this much.
const MIN_TIMED: Duration = Duration::from_millis(20);

/// Runs of one op at most, whatever [`MIN_TIMED`] asks.
const MAX_RUNS: usize = 1000;

/// Whether [`record`] runs its op again after `done` runs that took `timed` together, asked for `repeats`.
fn more_runs(done: usize, repeats: usize, timed: Duration) -> bool {
    done < repeats.max(1) || (repeats > 1 && timed < MIN_TIMED && done < MAX_RUNS)
}

/// Runs `op` `t.repeats` times (at least once) and, with more than one repeat, until the runs add up to
/// 20 ms (at most 1000 runs); records the median, returns the last output. An op's first runs are slower
/// (its input was just written by the op before: ResNet-18's layer2 downsample at batch 8 ran its first of
/// ten runs 35 % slower than its last, and the median of ten did not always leave such runs out); 20 ms are
/// ~30 runs of that 0.6 ms op, ~250 of its 0.07 ms at batch 1, and two of a 10 ms conv, which runs its ten
/// anyway.
pub fn record(
    out: &mut Vec<OpRecord>,
    name: &str,
    kind: OpKind,
    params: usize,
    macs: u64,
    t: &Timing,
    op: impl Fn() -> Result<Tensor>,
) -> Result<Tensor> {
    let mut times = Vec::with_capacity(t.repeats.max(1));
    let mut y = None;
    let mut timed = Duration::ZERO;
    while more_runs(times.len(), t.repeats, timed) {
        (t.sync)()?;
        let start = Instant::now();
        let r = op()?;
        (t.sync)()?;
        let took = start.elapsed();
        times.push(took);
        timed += took;
        y = Some(r);
    }
    times.sort();
    let y = y.expect("ran at least once");
    // An NCHW16c output's shape as (N, C, H, W).
    let shape = match y.dims() {
        &[n, blocks, h, w, crate::layers::blocked::LANES] => vec![n, blocks * crate::layers::blocked::LANES, h, w],
        dims => dims.to_vec(),
    };
    out.push(OpRecord {
        name: name.to_string(),
        kind,
        shape,
        params,
        macs,
        bytes: 0,
        median: times[times.len() / 2],
    });
    Ok(y)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use candle_core::{DType, Device};

    use super::*;

    /// Counts the runs `record` gives an op that takes `each` (a sleep) under `repeats`.
    fn runs(repeats: usize, each: Duration) -> usize {
        let calls = Cell::new(0);
        let sync = || Ok(());
        let op = || {
            calls.set(calls.get() + 1);
            std::thread::sleep(each);
            Tensor::zeros(2, DType::F32, &Device::Cpu)
        };
        let mut out = Vec::new();
        let y = record(&mut out, "op", OpKind::Conv, 0, 0, &Timing { repeats, sync: &sync }, op).unwrap();
        assert_eq!(y.dims(), [2]);
        assert_eq!(out.len(), 1);
        assert!(out[0].median >= each, "{:?} for an op of {each:?}", out[0].median);
        calls.get()
    }

    /// A small op runs past its repeats until its runs add up to the minimum time (a 0.2 ms op ~100 times;
    /// fewer only if the machine stretches each sleep past 6 ms); a long one runs its repeats; a single repeat
    /// (`zoo info`'s walk) is one run, however short.
    #[test]
    fn small_ops_run_until_the_minimum_time() {
        let small = runs(3, Duration::from_micros(200));
        assert!((4..=100).contains(&small), "{small} runs of a 0.2 ms op");
        assert_eq!(runs(3, Duration::from_millis(25)), 3);
        assert_eq!(runs(1, Duration::ZERO), 1);
    }

    /// The rule itself: the repeats asked for always, then more until the minimum time or the cap.
    #[test]
    fn the_run_rule() {
        let ms = Duration::from_millis;
        assert!(more_runs(0, 0, ms(0)) && !more_runs(1, 0, ms(0)), "at least one run");
        assert!(!more_runs(1, 1, ms(0)), "one repeat: one run");
        assert!(more_runs(2, 3, ms(500)), "the repeats asked for, however long");
        assert!(
            more_runs(3, 3, ms(19)) && !more_runs(3, 3, ms(20)),
            "then up to the minimum time"
        );
        assert!(
            more_runs(MAX_RUNS - 1, 3, ms(0)) && !more_runs(MAX_RUNS, 3, ms(0)),
            "the cap"
        );
        assert!(
            more_runs(MAX_RUNS + 5, MAX_RUNS + 10, ms(500)),
            "repeats past the cap still run"
        );
    }

    /// Each op's least traffic, against the bytes worked out by hand from ResNet-50's shapes at 64x64 (a 16x16
    /// map in layer1): inputs read once, weights and bias once, the output written once.
    #[test]
    fn bytes_are_inputs_weights_and_output() {
        let cfg = crate::variants::by_name("resnet50").unwrap();
        let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
        let model = ResNet::load(&cfg, vb, crate::BnMode::Fold).unwrap();
        let x = Tensor::zeros((2, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let sync = || Ok(());
        let ops = profile(
            &model,
            &x,
            &Timing {
                repeats: 1,
                sync: &sync,
            },
        )
        .unwrap();
        let bytes = |name: &str| {
            ops.iter()
                .find(|o| o.name == name)
                .unwrap_or_else(|| panic!("{name}"))
                .bytes
        };
        let map = |c: u64, hw: u64| 2 * c * hw * hw * 4;
        // Weights of `o` outputs `d` deep, and their bias.
        let w = |o: u64, d: u64| (o * d + o) * 4;
        assert_eq!(
            bytes("conv1+maxpool"),
            2 * 3 * 64 * 64 * 4 + map(64, 16) + w(64, 3 * 7 * 7)
        );
        assert_eq!(bytes("layer1.0.downsample"), map(64, 16) + map(256, 16) + w(256, 64));
        assert_eq!(bytes("layer1.0.conv2"), 2 * map(64, 16) + w(64, 64 * 9));
        // The block's last conv reads the shortcut too.
        assert_eq!(bytes("layer1.0.conv3"), map(64, 16) + 2 * map(256, 16) + w(256, 64));
        // Stride 2: a 16x16 input, an 8x8 output.
        assert_eq!(bytes("layer2.0.conv2"), map(128, 16) + map(128, 8) + w(128, 128 * 9));
        // The head pools layer4's 2x2 map itself.
        assert_eq!(bytes("fc"), map(2048, 2) + 2 * 1000 * 4 + (1000 * 2048 + 1000) * 4);
    }

    /// ResNet-18's stride-2 3x3 and its projection shortcut, which the forward pass runs on one packed input
    /// where the CPU has our micro-kernels: one op `conv1+downsample`, with both convs' multiply-adds and
    /// traffic (the input read once, both outputs written), its first output the one the walk goes on with; the
    /// whole walk's output the forward pass's. Elsewhere, two ops as before.
    #[test]
    fn a_shared_first_conv_and_projection_are_one_op() {
        let cfg = crate::variants::by_name("resnet18").unwrap();
        let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
        let model = ResNet::load(&cfg, vb, crate::BnMode::Fold).unwrap();
        let x = Tensor::rand(0f32, 1., (2, 3, 64, 64), &Device::Cpu).unwrap();
        let sync = || Ok(());
        let timing = Timing {
            repeats: 1,
            sync: &sync,
        };
        let ops = profile(&model, &x, &timing).unwrap();
        let op = |name: &str| ops.iter().find(|o| o.name == name);
        let names: Vec<&str> = ops.iter().map(|o| o.name.as_str()).collect();
        let map = |c: u64, hw: u64| 2 * c * hw * hw * 4;
        let w = |o: u64, d: u64| (o * d + o) * 4;
        if crate::layers::Engine::current().panel_rows().is_none() {
            assert!(
                op("layer2.0.downsample").is_some() && op("layer2.0.conv1").is_some(),
                "{names:?}"
            );
            return;
        }
        assert!(
            op("layer2.0.downsample").is_none() && op("layer2.0.conv1").is_none(),
            "{names:?}"
        );
        let shared = op("layer2.0.conv1+downsample").unwrap_or_else(|| panic!("{names:?}"));
        // A 16x16 input of 64 channels, two 8x8 outputs of 128.
        assert_eq!(shared.macs, 2 * 128 * 8 * 8 * (64 * 9 + 64));
        assert_eq!(
            shared.bytes,
            map(64, 16) + 2 * map(128, 8) + w(128, 64 * 9) + w(128, 64)
        );
        assert_eq!(shared.shape, [2, 128, 8, 8]);
        // BatchNorm folded in: a weight and a bias per channel each, as the checkpoint counts them.
        assert_eq!(shared.params, 64 * 128 * 9 + 128 * 64 + 2 * 2 * 128);
        for layer in ["layer3.0", "layer4.0"] {
            assert!(op(&format!("{layer}.conv1+downsample")).is_some(), "{names:?}");
        }
        // Every multiply-add of the network is in one op or another, once.
        let macs: u64 = ops.iter().map(|o| o.macs).sum();
        // A batch of two.
        let per_pixel = |c: u64, o: u64, k: u64, hw: u64| 2 * c * o * k * k * hw * hw;
        let convs = per_pixel(3, 64, 7, 32)
            + 4 * per_pixel(64, 64, 3, 16)
            + per_pixel(64, 128, 3, 8)
            + 3 * per_pixel(128, 128, 3, 8)
            + per_pixel(64, 128, 1, 8)
            + per_pixel(128, 256, 3, 4)
            + 3 * per_pixel(256, 256, 3, 4)
            + per_pixel(128, 256, 1, 4)
            + per_pixel(256, 512, 3, 2)
            + 3 * per_pixel(512, 512, 3, 2)
            + per_pixel(256, 512, 1, 2);
        assert_eq!(macs, convs + 2 * 512 * 1000);
    }
}

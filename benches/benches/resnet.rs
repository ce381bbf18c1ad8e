//! Criterion benches: our ResNet-18/50 vs candle-transformers' (same weights), batch 1 and 8, and the
//! hottest single convolutions (ours vs Candle's `conv2d`), including a ResNeXt grouped conv.
//!
//! `cargo bench -p zoo-benches --bench resnet [-- FILTER]`. For quick numbers use the `compare` binary.

use std::time::Duration;

use candle_core::{Device, Module};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use zoo_benches::{conv_cases, grouped_case, input, pair, Arch, ConvBench};

fn networks(c: &mut Criterion) {
    let device = Device::Cpu;
    for arch in Arch::ALL {
        let p = pair(arch, &device).unwrap();
        let mut g = c.benchmark_group(arch.name());
        g.sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5));
        for batch in [1usize, 8] {
            let x = input(batch, &device).unwrap();
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(BenchmarkId::new("ours", batch), &x, |b, x| {
                b.iter(|| p.ours.forward(x).unwrap())
            });
            g.bench_with_input(BenchmarkId::new("candle-transformers", batch), &x, |b, x| {
                b.iter(|| p.theirs.forward(x).unwrap())
            });
        }
        g.finish();
    }
}

fn convs(c: &mut Criterion) {
    let device = Device::Cpu;
    let mut g = c.benchmark_group("conv");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut cases = conv_cases();
    cases.push(grouped_case());
    for case in cases {
        let b = ConvBench::new(case, 1, &device).unwrap();
        g.throughput(Throughput::Elements(case.flops() as u64));
        g.bench_function(BenchmarkId::new("ours", case.name), |bn| {
            bn.iter(|| b.run_ours().unwrap())
        });
        g.bench_function(BenchmarkId::new("candle", case.name), |bn| {
            bn.iter(|| b.run_candle().unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, networks, convs);
criterion_main!(benches);

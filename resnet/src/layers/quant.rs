//! Int8 quantization of a convolution's inputs: what calibration records ([`Observer`]), the named ways of
//! turning it into a range ([`Calibration`]), and the result ([`ActQuant`]). Weights are quantized per
//! output channel, symmetrically, when the conv is built (`Conv::new_int8`).

/// Bins of the histogram of `|x|` that percentile and entropy calibration read.
const BINS: usize = 2048;

/// How a conv's inputs become unsigned 8-bit values: `q = clamp(round(x / scale) + zero, 0, 255)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActQuant {
    /// The value of one step.
    pub scale: f32,
    /// The code of 0.0: 0 for inputs that are never negative (every post-ReLU input), 128 otherwise.
    pub zero: u8,
}

impl ActQuant {
    /// The quantization that covers `[-threshold, threshold]` (or `[0, threshold]` when `non_negative`).
    pub fn from_threshold(threshold: f32, non_negative: bool) -> Self {
        let t = if threshold.is_finite() && threshold > 0.0 {
            threshold
        } else {
            1.0
        };
        match non_negative {
            true => ActQuant {
                scale: t / 255.0,
                zero: 0,
            },
            false => ActQuant {
                scale: t / 127.0,
                zero: 128,
            },
        }
    }
}

/// How the range of a conv's inputs is chosen from calibration data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calibration {
    /// The largest `|x|` seen: nothing clips, outliers stretch the step.
    MinMax,
    /// The given percentile of `|x|` (e.g. 99.99): the rare largest values clip.
    Percentile(f64),
    /// The threshold whose quantized histogram is closest to the original in KL divergence (TensorRT's
    /// entropy calibration).
    Entropy,
}

impl Calibration {
    /// `minmax`, `percentile` (99.99), `percentile:P`, or `entropy`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "minmax" | "min-max" => Some(Calibration::MinMax),
            "entropy" => Some(Calibration::Entropy),
            "percentile" => Some(Calibration::Percentile(99.99)),
            other => {
                let p: f64 = other.strip_prefix("percentile:")?.parse().ok()?;
                (p > 0.0 && p <= 100.0).then_some(Calibration::Percentile(p))
            }
        }
    }

    /// Whether this method reads the histogram (a second pass over the calibration data).
    pub fn needs_histogram(self) -> bool {
        self != Calibration::MinMax
    }
}

/// Statistics of a conv's inputs over a calibration run.
#[derive(Debug, Clone)]
pub struct Observer {
    min: f32,
    max: f32,
    /// `(range, bins)`: counts of `|x|` in `BINS` equal bins over `[0, range]` (the last takes the rest).
    hist: Option<(f32, Vec<u64>)>,
}

impl Observer {
    /// A fresh observer; with `Some(range)` it also builds the histogram of `|x|` over `[0, range]`.
    pub(crate) fn new(histogram: Option<f32>) -> Self {
        Observer {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            hist: histogram.map(|r| (r.max(f32::MIN_POSITIVE), vec![0; BINS])),
        }
    }

    /// Adds a batch of inputs (NaNs are skipped: they are caught at the logits).
    pub(crate) fn record(&mut self, x: &[f32]) {
        for &v in x {
            if v < self.min {
                self.min = v;
            }
            if v > self.max {
                self.max = v;
            }
        }
        if let Some((range, bins)) = &mut self.hist {
            let per = BINS as f32 / *range;
            for &v in x {
                if !v.is_nan() {
                    bins[((v.abs() * per) as usize).min(BINS - 1)] += 1;
                }
            }
        }
    }

    /// The smallest and largest input seen.
    pub fn range(&self) -> (f32, f32) {
        (self.min, self.max)
    }

    /// The largest `|x|` seen.
    pub fn abs_max(&self) -> f32 {
        self.min.abs().max(self.max.abs())
    }

    /// The quantization `method` picks from what was recorded (the histogram for percentile and entropy,
    /// else the range).
    pub fn act_quant(&self, method: Calibration) -> ActQuant {
        let non_negative = self.min >= 0.0;
        let threshold = match (method, &self.hist) {
            (Calibration::Percentile(p), Some((range, bins))) => percentile(bins, *range, p),
            (Calibration::Entropy, Some((range, bins))) => entropy(bins, *range, if non_negative { 255 } else { 127 }),
            _ => self.abs_max(),
        };
        ActQuant::from_threshold(threshold.min(self.abs_max()), non_negative)
    }
}

/// The upper edge of the bin where the cumulative count reaches `p` percent.
fn percentile(bins: &[u64], range: f32, p: f64) -> f32 {
    let total: u64 = bins.iter().sum();
    let want = (total as f64 * p / 100.0).ceil() as u64;
    let mut seen = 0;
    for (i, &c) in bins.iter().enumerate() {
        seen += c;
        if seen >= want {
            return (i + 1) as f32 * range / bins.len() as f32;
        }
    }
    range
}

/// The threshold (a bin edge) that minimises `KL(P || Q)`, with P the histogram clipped at the threshold
/// (outliers added to its last bin) and Q that histogram quantized to `levels` levels and expanded back.
fn entropy(bins: &[u64], range: f32, levels: usize) -> f32 {
    let n = bins.len();
    let mut best = (f64::INFINITY, n);
    for edge in (levels..=n).step_by(16) {
        let mut p: Vec<f64> = bins[..edge].iter().map(|&c| c as f64).collect();
        p[edge - 1] += bins[edge..].iter().sum::<u64>() as f64;
        let total: f64 = p.iter().sum();
        if total == 0.0 {
            continue;
        }
        // Q: the histogram inside the threshold (without the clipped mass) merged into `levels` groups, each
        // group's mass spread over its non-empty bins. The clipped mass, in P's last bin only, is what
        // clipping costs.
        let mut q = vec![0f64; edge];
        for l in 0..levels {
            let (a, b) = (l * edge / levels, ((l + 1) * edge / levels).max(l * edge / levels + 1));
            let mass: f64 = bins[a..b].iter().map(|&c| c as f64).sum();
            let nonzero = bins[a..b].iter().filter(|&&c| c > 0).count();
            if nonzero > 0 {
                for i in a..b {
                    if bins[i] > 0 {
                        q[i] = mass / nonzero as f64;
                    }
                }
            }
        }
        let qt: f64 = q.iter().sum();
        let kl: f64 = p
            .iter()
            .zip(&q)
            .filter(|(&pi, _)| pi > 0.0)
            .map(|(&pi, &qi)| {
                let (pi, qi) = (pi / total, (qi / qt).max(1e-12));
                pi * (pi / qi).ln()
            })
            .sum();
        if kl < best.0 {
            best = (kl, edge);
        }
    }
    best.1 as f32 * range / n as f32
}

/// True when this CPU runs an int8 kernel (AMX-INT8, on Linux with the tile state granted, or AVX512-VNNI)
/// and it was not turned off (`ZOO_INT8_KERNEL=f32`): [`super::Int8Kernel::detect`] is not the f32 one.
pub fn int8_kernel_supported() -> bool {
    super::Int8Kernel::detect().is_integer()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_from_a_known_distribution() {
        // 10 000 values spread evenly over [0, 1) and one outlier at 100.
        let mut x: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        x.push(100.0);
        let mut o = Observer::new(None);
        o.record(&x);
        assert_eq!(o.act_quant(Calibration::MinMax), ActQuant::from_threshold(100.0, true));
        let mut h = Observer::new(Some(o.abs_max()));
        h.record(&x);
        // 99.9 % of the mass lies below ~1: the percentile clips the outlier, to within a bin (100 / 2048).
        let t = h.act_quant(Calibration::Percentile(99.9)).scale * 255.0;
        assert!((0.95..1.1).contains(&t), "{t}");
        // Entropy keeps the bulk and lets the lone outlier clip.
        let t = h.act_quant(Calibration::Entropy).scale * 255.0;
        assert!(t < 20.0, "{t}");
        // Negative inputs get the zero point 128.
        let mut s = Observer::new(None);
        s.record(&[-2.0, 1.0]);
        assert_eq!(
            s.act_quant(Calibration::MinMax),
            ActQuant {
                scale: 2.0 / 127.0,
                zero: 128
            }
        );
        assert_eq!(
            Calibration::from_name("percentile:99.5"),
            Some(Calibration::Percentile(99.5))
        );
        assert_eq!(Calibration::from_name("nonsense"), None);
    }
}

//! A 2-D convolution whose grouped case runs as one batched matrix multiply.

use std::sync::Arc;

use candle_core::{DType, Device, Module, Result, Tensor};
use std::borrow::Cow;

use super::cpu_conv::PackedConv;

/// Shape and stride of one convolution, as read from the architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (filters).
    pub out_channels: usize,
    /// Side of the square kernel.
    pub kernel: usize,
    /// Step between output pixels, in input pixels.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Channel groups (ResNeXt's cardinality; 1 = dense).
    pub groups: usize,
    /// Spacing between kernel taps (1 = a plain convolution). Greater than 1 where a stage trades its
    /// stride for dilation (timm's `output_stride`, torchvision's `replace_stride_with_dilation`).
    pub dilation: usize,
}

impl ConvSpec {
    /// A `kernel x kernel` convolution with "same" padding.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize, stride: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding: kernel / 2,
            groups: 1,
            dilation: 1,
        }
    }

    /// Spaces the kernel taps `dilation` pixels apart, with the "same" padding that keeps the output size
    /// of the undilated convolution (`dilation * (kernel / 2)`).
    pub fn with_dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self.padding = dilation * (self.kernel / 2);
        self
    }

    /// Splits the channels into `groups` independent convolutions (ResNeXt's grouped 3x3).
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Shape of the weight tensor: (out, in / groups, k, k), PyTorch's OIHW.
    pub fn weight_shape(&self) -> (usize, usize, usize, usize) {
        (
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel,
            self.kernel,
        )
    }

    /// Multiply-adds per output value: `in / groups * k * k` (the GEMM's depth).
    pub fn depth(&self) -> usize {
        self.in_channels / self.groups * self.kernel * self.kernel
    }

    /// Spatial output size for an input of `size` pixels.
    pub fn output_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.dilation * (self.kernel - 1) - 1) / self.stride + 1
    }
}

/// A convolution with an optional per-channel bias.
///
/// Built with [`Conv::new`] it runs on Candle's generic ops (any device, autograd through the weights).
/// Built with [`Conv::new_inference`] from f32 weights on the CPU, it holds the weights packed once for
/// the CPU kernel of `layers::cpu_conv` (in the layout its [`super::Engine`] reads, which replaces the
/// OIHW tensor for the micro-kernel engines), which then serves every f32 CPU forward pass, with the bias,
/// a residual add and a ReLU fused in ([`Conv::forward_fused`]); gradients do not flow into such weights.
#[derive(Debug, Clone)]
pub struct Conv {
    /// OIHW; `None` when the packed copy is the only one.
    weight: Option<Tensor>,
    bias: Option<Tensor>,
    spec: ConvSpec,
    packed: Option<Arc<PackedConv>>,
    dtype: DType,
    device: Device,
}

impl Conv {
    /// A trainable convolution on Candle's generic ops.
    pub fn new(weight: Tensor, bias: Option<Tensor>, spec: ConvSpec) -> Self {
        Self {
            dtype: weight.dtype(),
            device: weight.device().clone(),
            weight: Some(weight),
            bias,
            spec,
            packed: None,
        }
    }

    /// An inference-only convolution: on the CPU with f32 (or bf16 / f16, see
    /// [`Conv::new_inference_cpu_as`]) weights, packs them for the fast kernel (the packed copy is detached
    /// from any autograd graph); elsewhere the same as [`Conv::new`].
    pub fn new_inference(weight: Tensor, bias: Option<Tensor>, spec: ConvSpec) -> Result<Self> {
        match (weight.device(), weight.dtype()) {
            // The CPU kernel has no dilated path yet: dilated convs stay on Candle's conv2d.
            (Device::Cpu, DType::F32) if spec.dilation == 1 => {
                let packed = PackedConv::new(&weight, bias.as_ref(), spec)?;
                Self::from_packed(packed, bias, spec)
            }
            // Candle's CPU ops have no bf16 matmul: bf16/f16 weights go to the CPU kernel, held as they are.
            (Device::Cpu, dtype @ (DType::BF16 | DType::F16)) if spec.dilation == 1 => {
                let w = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Self::new_inference_cpu_as(w, bias, spec, dtype)
            }
            _ => Ok(Self::new(weight, bias, spec)),
        }
    }

    /// [`Conv::new_inference`] from an OIHW f32 CPU buffer of `spec.weight_shape()`, which the conv takes
    /// over: the CPU kernel lays it out in place, so the weights are never held twice, even while loading.
    pub fn new_inference_cpu(weight: Vec<f32>, bias: Option<Tensor>, spec: ConvSpec) -> Result<Self> {
        Self::new_inference_cpu_as(weight, bias, spec, DType::F32)
    }

    /// [`Conv::new_inference_cpu`] with the weights held in `dtype`: f32, or bf16 / f16 (half the memory,
    /// rounded once from the f32 values given; products and sums in f32, on AVX512-BF16 dot products where
    /// the CPU has them, see [`super::Bf16Kernel`]). Inputs of any float dtype are taken; outputs are
    /// f32. Where the CPU kernel has no reduced-precision path (a CPU without AVX2, thin groups, dilation)
    /// the weights stay f32: [`Conv::dtype`] tells.
    ///
    /// ```
    /// use candle_core::{DType, Device, Module, Tensor};
    /// use resnet::layers::{Conv, ConvSpec};
    /// let spec = ConvSpec::new(16, 32, 3, 1);
    /// let w: Vec<f32> = (0..32 * 16 * 9).map(|i| (i as f32 * 0.1).sin() * 0.1).collect();
    /// let conv = Conv::new_inference_cpu_as(w, None, spec, DType::BF16)?;
    /// let y = conv.forward(&Tensor::ones((1, 16, 8, 8), DType::F32, &Device::Cpu)?)?;
    /// assert_eq!((y.dims(), y.dtype()), (&[1, 32, 8, 8][..], DType::F32));
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn new_inference_cpu_as(weight: Vec<f32>, bias: Option<Tensor>, spec: ConvSpec, dtype: DType) -> Result<Self> {
        Self::packed_cpu(weight, bias, spec, |w, b| {
            PackedConv::from_vec_as(w, b, spec, super::Engine::current(), dtype)
        })
    }

    /// A CPU inference conv whose f32 OIHW weights `pack` lays out (dilated convs: Candle's `conv2d`).
    fn packed_cpu(
        weight: Vec<f32>,
        bias: Option<Tensor>,
        spec: ConvSpec,
        pack: impl FnOnce(Vec<f32>, Option<&Tensor>) -> Result<PackedConv>,
    ) -> Result<Self> {
        let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
        if spec.dilation != 1 {
            let weight = Tensor::from_vec(weight, spec.weight_shape(), &Device::Cpu)?;
            return Self::new_inference(weight, bias, spec);
        }
        let packed = pack(weight, bias.as_ref())?;
        Self::from_packed(packed, bias, spec)
    }

    /// [`Conv::new_inference_cpu`] lowered as `lowering` says rather than as [`super::Lowering::detect`] does
    /// (a lowering only where [`super::Lowering::choose`] picks it for the CPU's engine): how
    /// `zoo-benches`' `lowering` binary times both on the same weights.
    ///
    /// ```
    /// use candle_core::{Device, Module, Tensor};
    /// use resnet::layers::{Conv, ConvSpec, Lowering};
    /// let spec = ConvSpec::new(16, 16, 3, 1);
    /// let w: Vec<f32> = (0..16 * 16 * 9).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
    /// let x = Tensor::randn(0f32, 1., (1, 16, 10, 10), &Device::Cpu)?;
    /// let gemm = Conv::new_inference_cpu_lowered(w.clone(), None, spec, Lowering::Gemm)?.forward(&x)?;
    /// let wino = Conv::new_inference_cpu_lowered(w, None, spec, Lowering::Winograd)?.forward(&x)?;
    /// let diff = (gemm - wino)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    /// assert!(diff < 1e-4);
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn new_inference_cpu_lowered(
        weight: Vec<f32>,
        bias: Option<Tensor>,
        spec: ConvSpec,
        lowering: super::Lowering,
    ) -> Result<Self> {
        Self::packed_cpu(weight, bias, spec, |w, b| {
            PackedConv::from_vec_lowered(w, b, spec, super::Engine::current(), lowering)
        })
    }

    /// An int8 convolution on the CPU from f32 OIHW weights (folded): weights quantized per output channel,
    /// inputs as `act` says, multiplied by AMX-INT8 tiles and dequantized in the epilogue (see
    /// [`super::quant`]). Without that kernel the dequantized weights are multiplied in f32
    /// ([`Conv::is_int8`] tells).
    pub fn new_int8(weight: Vec<f32>, bias: Option<Tensor>, spec: ConvSpec, act: super::ActQuant) -> Result<Self> {
        let bias = bias.map(|b| b.to_dtype(DType::F32)).transpose()?;
        if spec.dilation != 1 {
            candle_core::bail!("int8 convolutions do not support dilation")
        }
        let packed = PackedConv::from_vec_int8(weight, bias.as_ref(), spec, act)?;
        Self::from_packed(packed, bias, spec)
    }

    /// For an int8 conv ([`Conv::new_int8`], on the int8 kernel or its f32 fallback), how its inputs are
    /// quantized.
    pub fn int8_quant(&self) -> Option<super::ActQuant> {
        self.packed.as_ref().and_then(|p| p.int8_quant())
    }

    /// True when the conv multiplies int8 weights by int8 inputs.
    pub fn is_int8(&self) -> bool {
        self.packed.as_ref().is_some_and(|p| p.is_int8())
    }

    /// For an int8 conv, the kernel that multiplies it (on the int8 kernel or, with [`super::Int8Kernel::Dequantized`], its f32 fallback).
    pub fn int8_kernel(&self) -> Option<super::Int8Kernel> {
        self.packed.as_ref().and_then(|p| p.int8_kernel())
    }

    /// The CPU kernel's packed conv, where there is one.
    pub(crate) fn packed(&self) -> Option<&Arc<PackedConv>> {
        self.packed.as_ref()
    }

    /// A CPU f32 conv around its packed weights: a micro-kernel engine's panels are the weights' only copy;
    /// the portable engine's OIHW tensor is the model's weight tensor too.
    fn from_packed(packed: PackedConv, bias: Option<Tensor>, spec: ConvSpec) -> Result<Self> {
        let weight = match packed.owns_weights() {
            true => None,
            false => Some(packed.weight()?),
        };
        Ok(Self {
            weight,
            bias,
            spec,
            dtype: packed.dtype(),
            packed: Some(Arc::new(packed)),
            device: Device::Cpu,
        })
    }

    /// True when CPU inputs take the packed CPU kernel (which computes in f32 whatever the weights'
    /// dtype, and takes inputs of any float dtype).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// How the CPU kernel lowers this conv (`None`: not packed for it): Winograd or the direct conv where
    /// [`super::Lowering::choose`] picks them for the engine, else one GEMM.
    ///
    /// ```
    /// use resnet::layers::{Conv, ConvSpec, Engine, Lowering};
    /// let spec = ConvSpec::new(64, 64, 3, 1);
    /// let conv = Conv::new_inference_cpu(vec![0.01; 64 * 64 * 9], None, spec)?;
    /// // The portable engine multiplies OIHW rows as they are: one GEMM.
    /// let want = match Engine::current() {
    ///     Engine::Portable => Lowering::Gemm,
    ///     engine => Lowering::detect().choose(&spec, engine),
    /// };
    /// assert_eq!(conv.lowering(), Some(want));
    /// # Ok::<(), candle_core::Error>(())
    /// ```
    pub fn lowering(&self) -> Option<super::Lowering> {
        self.packed.as_ref().map(|p| p.lowering())
    }

    /// The kernel that multiplies bf16 weights held by the CPU kernel (`None`: not bf16, or not packed).
    pub fn bf16_kernel(&self) -> Option<super::Bf16Kernel> {
        self.packed.as_ref().and_then(|p| p.bf16_kernel())
    }

    /// The dtype activations flow in: f32 for a packed CPU conv (whatever its weights' dtype), else the
    /// weights' dtype.
    pub fn compute_dtype(&self) -> DType {
        match self.packed {
            Some(_) => DType::F32,
            None => self.dtype,
        }
    }

    /// `relu?(conv(x) + bias + residual?)`, in one pass over the output on the CPU kernel. A conv on an
    /// int8 kernel also takes the u8 output of [`Conv::forward_into`] with it as `next`.
    pub fn forward_fused(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        if let Some(p) = self.fast_path(x) {
            let x = to_kernel_dtype(x)?;
            let residual = residual.map(|r| r.to_dtype(DType::F32)).transpose()?;
            return p.forward(&x, residual.as_ref(), relu);
        }
        let mut y = self.forward(x)?;
        if let Some(r) = residual {
            y = (y + r)?;
        }
        if relu {
            y = y.relu()?;
        }
        Ok(y)
    }

    /// `relu?(conv(x) + bias)` for `next` to take: where both convs are int8 convs on an int8 kernel, the
    /// output is u8, already quantized the way `next` quantizes its inputs (exactly the bytes `next` would
    /// make of the f32 output, at a quarter of the memory traffic), which only `next` should read; else the
    /// same as [`Conv::forward_fused`] without a residual.
    pub fn forward_into(&self, x: &Tensor, relu: bool, next: &Conv) -> Result<Tensor> {
        self.forward_fused_into(x, None, relu, next)
    }

    /// [`Conv::forward_into`] with a residual added before the ReLU: `relu?(conv(x) + bias + residual?)` as
    /// the bytes `next` reads where both are int8 convs on an int8 kernel, else as [`Conv::forward_fused`].
    pub fn forward_fused_into(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool, next: &Conv) -> Result<Tensor> {
        if let (Some(p), Some(n)) = (self.fast_path(x), &next.packed) {
            let residual = residual.map(|r| r.to_dtype(DType::F32)).transpose()?;
            return p.forward_added_emitting(&to_kernel_dtype(x)?, residual.as_ref(), relu, n);
        }
        self.forward_fused(x, residual, relu)
    }

    /// `maxpool3x3s2(relu?(conv(x) + bias))` as one fused CPU kernel, where this conv has one (a direct conv:
    /// a network's thin strided stem, see [`crate::layers::Lowering::Direct`]) and `x` is a float CPU
    /// tensor; else `None` (the caller runs the conv, then the pool). The pooled map is the unfused pair's,
    /// bit for bit.
    pub fn forward_pooled(&self, x: &Tensor, relu: bool) -> Result<Option<Tensor>> {
        match self.fast_path(x) {
            Some(p) if p.pools_fused() && x.dtype() != DType::U8 => {
                Ok(Some(p.forward_pooled(&to_kernel_dtype(x)?, relu)?))
            }
            _ => Ok(None),
        }
    }

    /// `(relu?(conv(x) + bias), twin(x) + twin's bias)` on one packed input where both convs run on the CPU
    /// kernel and can share it (`PackedConv::shares_input`: a strided conv and the 1x1 projection beside
    /// it that reads one of its taps); else `None` (the caller runs them one by one). Each output is the one
    /// its conv gives alone, to the bit.
    ///
    /// ```
    /// use candle_core::{Device, Tensor};
    /// use resnet::layers::{Conv, ConvSpec};
    /// # fn main() -> candle_core::Result<()> {
    /// // ResNet-18's layer2.0: a stride-2 3x3 (padding 1) and the 1x1 projection beside it, 64 -> 128 channels.
    /// let mut spec = ConvSpec::new(64, 128, 3, 2);
    /// spec.padding = 1;
    /// let conv = Conv::new_inference_cpu(vec![0.01; 128 * 64 * 9], None, spec)?;
    /// let proj = Conv::new_inference_cpu(vec![0.02; 128 * 64], None, ConvSpec::new(64, 128, 1, 2))?;
    /// let x = Tensor::rand(0f32, 1., (2, 64, 16, 16), &Device::Cpu)?;
    /// if let Some((y, shortcut)) = conv.forward_shared(&x, &proj, true)? {
    ///     let diff = |a: &Tensor, b: &Tensor| a.sub(b)?.abs()?.max_all()?.to_scalar::<f32>();
    ///     assert_eq!(diff(&y, &conv.forward_fused(&x, None, true)?)?, 0.0);
    ///     assert_eq!(diff(&shortcut, &proj.forward_fused(&x, None, false)?)?, 0.0);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn forward_shared(&self, x: &Tensor, twin: &Conv, relu: bool) -> Result<Option<(Tensor, Tensor)>> {
        match (self.fast_path(x), &twin.packed, x.dtype()) {
            (Some(p), Some(t), DType::F32) => p.forward_shared(x, t, relu),
            _ => Ok(None),
        }
    }

    /// The activation layout this conv computes in on the CPU kernel ([`super::Layout::Nchw16c`]: a 1x1 held for
    /// the channel-blocked kernel, loaded under that layout); [`super::Layout::Nchw`] otherwise. Either way it
    /// takes an input in either layout and returns its output in the input's (see [`super::blocked`]).
    pub fn layout(&self) -> super::Layout {
        self.packed.as_ref().map_or(super::Layout::Nchw, |p| p.layout())
    }

    fn fast_path(&self, x: &Tensor) -> Option<&Arc<PackedConv>> {
        match (&self.packed, x.device(), x.dtype()) {
            (Some(p), Device::Cpu, DType::F32 | DType::BF16 | DType::F16) => Some(p),
            (Some(p), Device::Cpu, DType::U8) if p.is_int8() => Some(p),
            _ => None,
        }
    }

    /// The weight, (out, in / groups, k, k): the tensor itself, or (for weights packed for a CPU
    /// micro-kernel, which keep no OIHW copy) a new tensor unpacked from the panels.
    pub fn weight(&self) -> Result<Cow<'_, Tensor>> {
        match (&self.weight, &self.packed) {
            (Some(w), _) => Ok(Cow::Borrowed(w)),
            (None, Some(p)) => Ok(Cow::Owned(p.weight()?)),
            (None, None) => candle_core::bail!("conv without weights"),
        }
    }

    /// The dtype the weights are held in (for a packed CPU conv, see [`Conv::compute_dtype`] for the
    /// activations').
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of weight values (without the bias).
    pub fn weight_count(&self) -> usize {
        self.spec.out_channels * self.spec.depth()
    }

    /// The bias, (out,), where the convolution has one (always after BatchNorm folding).
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Shape, stride, padding, groups and dilation.
    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// Candle's own grouped conv runs one convolution per group and concatenates the results: 32 or 64
    /// im2col passes and kernel launches per ResNeXt block. Here the whole input is unfolded once and all
    /// groups go through a single batched matmul.
    fn forward_grouped(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.spec;
        let (n, c, h, w) = x.dims4()?;
        let (oh, ow) = (s.output_size(h), s.output_size(w));
        let cols = im2col(x, s, (oh, ow))?;
        let cg = c / s.groups;
        let k = cg * s.kernel * s.kernel;
        let cols = cols.reshape((n, s.groups, k, oh * ow))?;
        let og = s.out_channels / s.groups;
        let w = self.weight()?.reshape((1, s.groups, og, k))?;
        w.broadcast_matmul(&cols)?.reshape((n, s.out_channels, oh, ow))
    }
}

/// Unfolds `x` (N, C, H, W) into (N, C, k*k, OH, OW): entry (c, i*k+j, y, x) is the input pixel that
/// kernel tap (i, j) sees for output (y, x). Row-major in (c, i, j), matching an OIHW weight's layout.
fn im2col(x: &Tensor, s: ConvSpec, (oh, ow): (usize, usize)) -> Result<Tensor> {
    let (k, pad, d) = (s.kernel, s.padding, s.dilation);
    let x = x.pad_with_zeros(2, pad, pad)?.pad_with_zeros(3, pad, pad)?;
    let mut taps = Vec::with_capacity(k * k);
    for i in 0..k {
        for j in 0..k {
            let rows = take_strided(&x, 2, i * d, oh, s.stride)?;
            taps.push(take_strided(&rows, 3, j * d, ow, s.stride)?);
        }
    }
    Tensor::stack(&taps, 2)
}

/// `x[.., start : start + stride * count : stride]` along `dim`, from differentiable ops (narrow, pad,
/// reshape), so the training path can use it too.
pub fn take_strided(x: &Tensor, dim: usize, start: usize, count: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim, start, count);
    }
    let avail = x.dim(dim)? - start;
    let len = (stride * count).min(avail);
    let x = x.narrow(dim, start, len)?;
    // Pad to a whole number of strides so the axis can be split into (count, stride).
    let x = x.pad_with_zeros(dim, 0, stride * count - len)?;
    let mut shape = x.dims().to_vec();
    shape[dim] = count;
    shape.insert(dim + 1, stride);
    x.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// What the CPU kernel reads: f32, or the u8 an int8 conv handed on ([`Conv::forward_into`]) as it is.
fn to_kernel_dtype(x: &Tensor) -> Result<Tensor> {
    match x.dtype() {
        DType::U8 => Ok(x.clone()),
        _ => x.to_dtype(DType::F32),
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(p) = self.fast_path(x) {
            return p.forward(&to_kernel_dtype(x)?, None, false);
        }
        let s = self.spec;
        let y = if s.groups == 1 {
            x.conv2d(&*self.weight()?, s.padding, s.stride, s.dilation, 1)?
        } else {
            self.forward_grouped(x)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, s.out_channels, 1, 1))?),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bf16 weight tensor given to `new_inference` on the CPU goes to the CPU kernel held in bf16 (Candle's
    /// CPU ops have no bf16 matmul), and computes what the same weights do in f32, within bf16's rounding.
    #[test]
    fn bf16_weights_on_the_cpu_take_the_kernel() -> Result<()> {
        let spec = ConvSpec::new(16, 32, 3, 1);
        let w = Tensor::randn(0f32, 0.1, spec.weight_shape(), &Device::Cpu)?;
        let bias = Tensor::randn(0f32, 1.0, 32, &Device::Cpu)?;
        let reduced = Conv::new_inference(w.to_dtype(DType::BF16)?, Some(bias.to_dtype(DType::BF16)?), spec)?;
        assert!(reduced.is_packed());
        assert_eq!((reduced.dtype(), reduced.compute_dtype()), (DType::BF16, DType::F32));
        let exact = Conv::new_inference(w.to_dtype(DType::BF16)?.to_dtype(DType::F32)?, Some(bias), spec)?;
        let x = Tensor::randn(0f32, 1.0, (2, 16, 9, 9), &Device::Cpu)?;
        let y = reduced.forward(&x.to_dtype(DType::BF16)?)?;
        let diff = (y - exact.forward(&x)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        // bf16 inputs, bias rounded to bf16 by the caller: errors of a few bf16 ulps of values ~1-5.
        assert!(diff < 0.1, "{diff}");
        Ok(())
    }
}

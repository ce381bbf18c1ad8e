//! Feature maps of chosen stages, as timm's `feature_info`, `forward_intermediates` and `features_only` give
//! them (for detection and segmentation backbones).
//!
//! Feature index 0 is the stem's activation before its pooling (timm's `act1`, stride 2 for ImageNet stems),
//! index `i >= 1` the output of stage `layer{i}`. With [`ResNetConfig::output_stride`](crate::ResNetConfig)
//! set, the dilated stages keep the reduction of the last strided one.

use candle_core::{ModuleT, Tensor};

use crate::error::{Error, Result};
use crate::model::ResNet;

/// One feature map a network can hand out: timm's `feature_info` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureInfo {
    /// Channels.
    pub num_chs: usize,
    /// Downsampling from the input (2, 4, 8, 16, 32 for an ImageNet ResNet).
    pub reduction: usize,
    /// The module it is the output of (`act1`, `layer1`, ...).
    pub module: String,
}

impl ResNet {
    /// Every feature map [`ResNet::forward_intermediates`] can return, index 0 the stem's activation.
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        let cfg = self.config();
        let stem_reduction = match cfg.stem_reduction() {
            1 => 1,
            r => r / 2, // the activation before the stem's stride-2 pool
        };
        let mut out = vec![FeatureInfo {
            num_chs: cfg.stem.out_channels(),
            reduction: stem_reduction,
            module: "act1".into(),
        }];
        for (i, r) in cfg.stage_reductions().into_iter().enumerate() {
            let num_chs = cfg.channels[i] * cfg.block.expansion();
            out.push(FeatureInfo {
                num_chs,
                reduction: r,
                module: format!("layer{}", i + 1),
            });
        }
        out
    }

    /// The feature maps at `indices` (into [`ResNet::feature_info`], any order, each at most once), in the
    /// order asked; the pass stops after the deepest one asked for.
    pub fn forward_intermediates(&self, x: &Tensor, indices: &[usize]) -> Result<Vec<Tensor>> {
        self.forward_intermediates_t(x, indices, false)
    }

    /// [`ResNet::forward_intermediates`] in train (`true`) or eval mode.
    pub fn forward_intermediates_t(&self, x: &Tensor, indices: &[usize], train: bool) -> Result<Vec<Tensor>> {
        let last = check_indices(indices, self.stages().len())?;
        let mut maps: Vec<Option<Tensor>> = vec![None; last + 1];
        let mut x = self.stem().forward_convs_t(x, train)?;
        maps[0] = Some(x.clone());
        x = self.stem().forward_pool(&x)?;
        for (i, stage) in self.stages().iter().enumerate().take(last) {
            x = stage.forward_t(&x, train)?;
            maps[i + 1] = Some(x.clone());
        }
        indices
            .iter()
            .map(|&i| {
                maps[i]
                    .clone()
                    .ok_or_else(|| Error::InvalidConfig(format!("feature {i} was not computed")))
            })
            .collect()
    }

    /// The network as a backbone for `indices` only (timm's `features_only=True, out_indices=...`): stages
    /// after the deepest index and the classifier are dropped.
    pub fn features_only(mut self, indices: &[usize]) -> Result<FeatureExtractor> {
        let last = check_indices(indices, self.stages.len())?;
        self.stages.truncate(last);
        self.head = None;
        Ok(FeatureExtractor {
            net: self,
            indices: indices.to_vec(),
        })
    }
}

/// The deepest index, after checking every index exists and appears once.
fn check_indices(indices: &[usize], stages: usize) -> Result<usize> {
    let mut seen = vec![false; stages + 1];
    for &i in indices {
        if i > stages || std::mem::replace(&mut seen[i], true) {
            return Err(Error::InvalidConfig(format!(
                "feature indices {indices:?}: each must appear once and be at most {stages} (0 = stem, 1..={stages} = stages)"
            )));
        }
    }
    indices
        .iter()
        .copied()
        .max()
        .ok_or_else(|| Error::InvalidConfig("no feature index given".into()))
}

/// A backbone that returns the feature maps of chosen stages ([`ResNet::features_only`]).
#[derive(Debug, Clone)]
pub struct FeatureExtractor {
    net: ResNet,
    indices: Vec<usize>,
}

impl FeatureExtractor {
    /// The maps, in the order of the indices it was built with.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.net.forward_intermediates(x, &self.indices)
    }

    /// [`FeatureExtractor::forward`] in train (`true`) or eval mode.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Vec<Tensor>> {
        self.net.forward_intermediates_t(x, &self.indices, train)
    }

    /// Channels, reduction and module of each returned map.
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        let all = self.net.feature_info();
        self.indices.iter().map(|&i| all[i].clone()).collect()
    }

    /// The truncated network underneath.
    pub fn net(&self) -> &ResNet {
        &self.net
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::VarBuilder;

    use super::*;

    fn zeros(cfg: &crate::ResNetConfig) -> ResNet {
        ResNet::new(cfg, VarBuilder::zeros(DType::F32, &Device::Cpu)).unwrap()
    }

    #[test]
    fn feature_info_follows_output_stride() {
        let r = |os: Option<usize>| {
            let mut cfg = crate::variants::resnet50();
            cfg.output_stride = os;
            zeros(&cfg)
                .feature_info()
                .iter()
                .map(|f| f.reduction)
                .collect::<Vec<_>>()
        };
        assert_eq!(r(None), [2, 4, 8, 16, 32]);
        assert_eq!(r(Some(16)), [2, 4, 8, 16, 16]);
        assert_eq!(r(Some(8)), [2, 4, 8, 8, 8]);
        let info = zeros(&crate::variants::resnet50()).feature_info();
        assert_eq!(
            info.iter().map(|f| f.num_chs).collect::<Vec<_>>(),
            [64, 256, 512, 1024, 2048]
        );
        assert_eq!(zeros(&crate::variants::resnet20()).feature_info()[3].reduction, 4);
    }

    #[test]
    fn maps_have_the_announced_shapes_and_extractor_agrees() {
        let net = zeros(&crate::variants::resnet18());
        let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let maps = net.forward_intermediates(&x, &[4, 0, 1]).unwrap();
        let info = net.feature_info();
        for (m, i) in maps.iter().zip([4, 0, 1]) {
            assert_eq!(
                m.dims(),
                &[1, info[i].num_chs, 64 / info[i].reduction, 64 / info[i].reduction]
            );
        }
        let ex = net.clone().features_only(&[1, 2]).unwrap();
        assert_eq!(ex.net().stages().len(), 2);
        let a = ex.forward(&x).unwrap();
        let b = net.forward_intermediates(&x, &[1, 2]).unwrap();
        assert_eq!(a[1].dims(), b[1].dims());
        assert!(net.forward_intermediates(&x, &[5]).is_err());
        assert!(net.forward_intermediates(&x, &[1, 1]).is_err());
    }
}

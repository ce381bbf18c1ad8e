//! Fine-tuning: replace a pretrained network's classifier and train it on an image folder.
//!
//! ```no_run
//! # fn main() -> Result<(), resnet::train::TrainError> {
//! use candle_core::Device;
//! use resnet::train::{finetune, Dataset, FinetuneConfig, ImageFolder, Scope, TrainableResNet};
//! let device = Device::Cpu;
//! let mut net = TrainableResNet::from_checkpoint("resnet20.safetensors", Some("resnet20"), &device)?;
//! let data = ImageFolder::open("photos/")?;
//! net.replace_head(data.classes().to_vec(), 0)?;
//! let (train, val) = data.split(0.2, 0);
//! let train = Dataset::load(&train, &net.preprocess, true)?;
//! let val = Dataset::load(&val, &net.preprocess, false)?;
//! let cfg = FinetuneConfig { scope: Scope::Head, epochs: 5, ..Default::default() };
//! finetune(&net, &train, Some(&val), &cfg, &mut |_event| {})?;
//! net.save("finetuned.safetensors")?;
//! # Ok(()) }
//! ```
//!
//! The same as a program: `resnet/examples/finetune.rs`.
//!
//! The pieces: [`TrainableResNet`] (weights held as `candle_nn::Var`s, save with self-describing
//! metadata), [`dataset`] (ImageFolder, train-time augmentation, eval transform), [`freeze`] (which
//! parameters train and whether BatchNorm runs in train mode), [`optim`] (SGD with momentum on
//! candle-nn's `Optimizer` trait, next to candle-nn's own AdamW) and [`finetune()`] (the loop).

pub mod dataset;
pub mod finetune;
pub mod freeze;
pub mod optim;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use weights::checkpoint::{self, CheckpointError};
use weights::PreprocessConfig;

use crate::config::ResNetConfig;
use crate::layers::BnMode;
use crate::model::ResNet;

pub use dataset::{Augment, Dataset, ImageFolder, Sample};
pub use finetune::{
    evaluate, finetune, recommended_lr, scheduled_lr, EpochStats, Event, FinetuneConfig, OptimizerKind,
};
pub use freeze::Scope;

/// Why fine-tuning could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    /// Building or loading the network failed.
    Model(#[from] crate::Error),
    #[error(transparent)]
    /// A tensor operation failed.
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    /// A checkpoint could not be read or written.
    Checkpoint(#[from] CheckpointError),
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    #[error("cannot decode image {path}: {reason}")]
    /// An image could not be decoded.
    Image {
        /// The file.
        path: PathBuf,
        /// What went wrong, in the decoder's words.
        reason: String,
    },
    #[error("{0}")]
    /// The data or the settings are unusable (the message says why).
    Data(String),
    /// The loss became NaN or infinite: the weights are no longer usable and nothing is saved.
    #[error("training diverged: the loss is not finite at epoch {epoch}, step {step} (peak learning rate {lr}); a smaller learning rate may train")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// The peak learning rate used.
        lr: f64,
    },
}

/// The result type of training.
pub type Result<T> = std::result::Result<T, TrainError>;

/// A ResNet whose weights are `candle_nn::Var`s, with what is needed to save it self-describing.
///
/// Every tensor of the network (BatchNorm running statistics included) lives in [`TrainableResNet::varmap`]
/// under its canonical name. The model's layers share those variables' storage, so optimizer steps and
/// BatchNorm's running-statistic updates show up in the map, and [`TrainableResNet::save`] writes them.
pub struct TrainableResNet {
    /// The network (BatchNorm kept apart, weights shared with `varmap`).
    pub model: ResNet,
    /// Every tensor of the network as a variable, by canonical name.
    pub varmap: VarMap,
    /// Architecture name for the checkpoint's `zoo.arch` (e.g. `resnet20`).
    pub arch: String,
    /// The eval preprocessing the weights expect (training crops follow its size and normalization).
    pub preprocess: PreprocessConfig,
    /// Class names, one per output of the head (empty when unknown).
    pub labels: Vec<String>,
    device: Device,
}

impl TrainableResNet {
    /// Builds the network from tensors with canonical names (see [`crate::keys`]), BatchNorm kept apart.
    pub fn from_tensors(
        arch: &str,
        config: &ResNetConfig,
        tensors: HashMap<String, Tensor>,
        preprocess: PreprocessConfig,
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let given: std::collections::HashSet<String> = tensors.keys().cloned().collect();
        {
            let mut data = varmap.data().lock().expect("varmap lock");
            for (name, t) in tensors {
                let t = t.to_dtype(DType::F32)?.to_device(device)?;
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = ResNet::load(config, vb, BnMode::Keep)?;
        // A VarMap invents any variable it is asked for and lacks: refuse instead of training from noise.
        let mut missing: Vec<String> = varmap
            .data()
            .lock()
            .expect("varmap lock")
            .keys()
            .filter(|k| !given.contains(*k))
            .cloned()
            .collect();
        if !missing.is_empty() {
            missing.sort();
            return Err(TrainError::Data(format!(
                "the weights lack {} tensors: {}",
                missing.len(),
                missing.join(", ")
            )));
        }
        Ok(Self {
            model,
            varmap,
            arch: arch.to_string(),
            preprocess,
            labels: vec![],
            device: device.clone(),
        })
    }

    /// Loads a checkpoint through the crate's one loader ([`crate::load`]): any format it reads, the
    /// architecture by its precedence rule (`arch` names it; a conflict with the file's own is an error),
    /// every tensor checked. Preprocessing and class names come from the file's metadata, else the
    /// architecture's defaults.
    pub fn from_checkpoint(path: impl AsRef<Path>, arch: Option<&str>, device: &Device) -> Result<Self> {
        let opts = crate::load::LoadOptions {
            arch: arch.map(str::to_string),
            ..Default::default()
        };
        Self::from_checkpoint_with(path, &opts, device)
    }

    /// [`TrainableResNet::from_checkpoint`] with every loader option (the BatchNorm mode and dtype are the
    /// trainer's own: kept, f32).
    pub fn from_checkpoint_with(
        path: impl AsRef<Path>,
        opts: &crate::load::LoadOptions,
        device: &Device,
    ) -> Result<Self> {
        let opts = crate::load::LoadOptions {
            bn_mode: BnMode::Keep,
            dtype: DType::F32,
            ..opts.clone()
        };
        let (tensors, info) = crate::load::load_tensors(path.as_ref(), &opts, device)?;
        let preprocess = info.preprocess_or_default();
        let mut net = Self::from_tensors(&info.arch, &info.config, tensors, preprocess, device)?;
        net.labels = info.labels.unwrap_or_default();
        Ok(net)
    }

    /// The network's config.
    pub fn config(&self) -> &ResNetConfig {
        self.model.config()
    }

    /// The device the variables live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Replaces the classifier with a fresh `labels.len()`-way one, initialised like PyTorch's
    /// `nn.Linear` (uniform in +-1/sqrt(features)) from `seed`: the transfer-learning step.
    pub fn replace_head(&mut self, labels: Vec<String>, seed: u64) -> Result<()> {
        let n = labels.len();
        if n == 0 {
            return Err(TrainError::Data("the new head needs at least one class".into()));
        }
        let features = self.model.config().num_features();
        let bound = 1.0 / (features as f32).sqrt();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x4ead);
        let mut uniform = |count: usize| -> Vec<f32> { (0..count).map(|_| rng.random_range(-bound..bound)).collect() };
        let w = Tensor::from_vec(uniform(n * features), (n, features), &self.device)?;
        let b = Tensor::from_vec(uniform(n), n, &self.device)?;
        {
            let mut data = self.varmap.data().lock().expect("varmap lock");
            data.insert("fc.weight".into(), Var::from_tensor(&w)?);
            data.insert("fc.bias".into(), Var::from_tensor(&b)?);
        }
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, &self.device);
        self.model.replace_head(n, vb.pp("fc"))?;
        self.labels = labels;
        Ok(())
    }

    /// A snapshot of the network's tensors under their canonical names (running statistics included).
    /// The tensors are copies: optimizer steps update variables in place, and must not change a snapshot.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let data = self.varmap.data().lock().expect("varmap lock");
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach().copy().expect("copy of a variable")))
            .collect()
    }

    /// The checkpoint metadata that makes the file self-describing: arch, config, preprocessing, labels
    /// (written by the loader's own [`crate::load::write_metadata`]).
    pub fn metadata(&self) -> HashMap<String, String> {
        let labels = (!self.labels.is_empty()).then_some(self.labels.as_slice());
        crate::load::write_metadata(&self.arch, self.model.config(), &self.preprocess, labels)
    }

    /// Writes a self-describing safetensors checkpoint (atomically). Weights that are not all finite are an
    /// error and nothing is written.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let tensors = self.tensors();
        for (name, t) in &tensors {
            crate::finite::ensure_finite(t, || format!("tensor `{name}` of the trained network"))?;
        }
        checkpoint::save(path, &tensors, &self.metadata())?;
        Ok(())
    }
}

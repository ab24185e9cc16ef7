//! Detectors in libtorch: record files with boxes read as batches ([`DetectionSet`]), ground truth
//! matched to the priors on the device for the whole batch at once ([`match_targets`]), SSD's
//! multibox loss with 3:1 hard-negative mining ([`multibox_loss`]), mAP@0.5 on a set
//! ([`evaluate_detector`]) and the training loop of `trainer train` for a detector
//! ([`train_detector`]), with the classifier's workflow: configs, checkpoints every epoch, resume at
//! epoch N, Ctrl-C and `--resume`, metrics and plots.

use std::path::{Path, PathBuf};
use std::time::Instant;

use data::records::{BoundingBox, RecordFile};
use data::{DetectTransform, Loader, LoaderOptions};
use models::detect::{postprocess, DetectorSpec, GroundTruth, MapEvaluator};
use tch::{Device, Kind, Tensor};

use crate::batches::{batch_spec, labels_beside, BatchError};
use crate::config::{Config, Overrides};
use crate::evaluation::{EpochMetrics, EvalMetrics};
use crate::net::Net;
use crate::run_dir::RunDir;
use crate::run_files::{interrupted_paths, load_interrupted, record_run, save_checkpoint, CheckpointInfo, RunLog};
use crate::train::{checkpoint_info, checkpoint_saved, net_for, restore_start, step_seed, BuildError, TrainError};

/// Why detection data or a detector cannot be used; each names the file, record or setting.
#[derive(Debug, thiserror::Error)]
pub enum DetectionError {
    #[error("{model} is not a detector (its graph has no detector spec)")]
    NotADetector { model: String },
    #[error("{path}: record '{key}' has a box of class {class}, but the set has {classes} classes (labels.txt)")]
    Class { path: PathBuf, key: String, class: u32, classes: usize },
    #[error("{path}: no labels.txt beside it (a detection set names its classes there)")]
    NoLabels { path: PathBuf },
    #[error("the model detects {model} classes and {path} has {data}: set model.num_classes or use data with the same classes")]
    Classes { model: usize, data: usize, path: PathBuf },
    #[error("{path}: the data's classes {missing:?} are not among the model's {model:?} (classes are matched by name, labels.txt)")]
    UnknownClasses { path: PathBuf, missing: Vec<String>, model: Vec<String> },
    #[error("training a detector on {world} processes is not supported yet: run it on one (no --nproc, torchrun or train.devices)")]
    Distributed { world: usize },
    #[error("data.prepare = \"{name}\": unknown; the one data set built on first use is \"fashion-detect\"")]
    UnknownPrepare { name: String },
    #[error("building {what} into {dir}: {reason}")]
    Prepare { what: String, dir: PathBuf, reason: String },
    #[error(transparent)]
    Spec(#[from] models::detect::DetectError),
    #[error(transparent)]
    Graph(#[from] models::graph::GraphError),
}

/// A record file with boxes, read in batches through the detection loader.
pub struct DetectionSet {
    loader: Loader,
    records: PathBuf,
    /// The foreground classes (`labels.txt`); a record box of class k is the model's class k + 1.
    pub labels: Vec<String>,
    /// The model's class (0-based foreground) of each of the data's classes, when they differ.
    remap: Option<Vec<u32>>,
}

/// One batch: the images and, per image, its boxes in pixels of the input.
pub struct DetectionBatch {
    pub x: Tensor,
    pub boxes: Vec<Vec<BoundingBox>>,
    pub keys: Vec<String>,
}

impl DetectionSet {
    /// Opens `path` (a `.rec` with `labels.txt` beside it); `limit` keeps the first N records (0: all).
    pub fn open(path: &Path, limit: usize, transform: DetectTransform, opts: LoaderOptions) -> Result<Self, TrainError> {
        let mut file = RecordFile::open(path).map_err(BatchError::from)?;
        if limit > 0 {
            file.index.truncate(limit);
        }
        let labels = labels_beside(path).map_err(BatchError::from)?.ok_or_else(|| DetectionError::NoLabels { path: path.to_path_buf() })?;
        Ok(DetectionSet { loader: Loader::detection(file, transform, opts), records: path.to_path_buf(), labels, remap: None })
    }

    /// Reads the data's classes as the model's, matched by name (`model` without the background): the
    /// set then reports boxes in the model's classes and takes its labels. A data class the model
    /// does not know is an error naming it; model classes the data lacks simply have no ground truth.
    pub fn match_model(mut self, model: &[String]) -> Result<Self, DetectionError> {
        if self.labels == model {
            return Ok(self);
        }
        let at = models::detect::match_classes(&self.labels, model).map_err(|missing| DetectionError::UnknownClasses {
            path: self.records.clone(),
            missing,
            model: model.to_vec(),
        })?;
        self.remap = Some(at.into_iter().map(|k| k as u32).collect());
        self.labels = model.to_vec();
        Ok(self)
    }

    pub fn len(&self) -> usize {
        self.loader.len()
    }

    pub fn is_empty(&self) -> bool {
        self.loader.is_empty()
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.loader.batches_per_epoch()
    }

    /// The batches of `epoch` from batch `start` on; a box whose class is not in `labels.txt` is an
    /// error naming its record, an image that does not decode is skipped and reported.
    pub fn batches(&self, epoch: usize, start: usize, device: Device) -> impl Iterator<Item = Result<DetectionBatch, TrainError>> + '_ {
        let classes = self.remap.as_ref().map_or(self.labels.len(), Vec::len);
        self.loader.epoch_from(epoch, start).map(move |b| {
            let mut b = b.map_err(|source| BatchError::Read { path: self.records.clone(), source })?;
            for (key, why) in &b.skipped {
                tracing::warn!("{}: skipped {key}: {why}", self.records.display());
            }
            for (key, boxes) in b.keys.iter().zip(&b.boxes) {
                if let Some(bad) = boxes.iter().find(|x| x.class as usize >= classes) {
                    return Err(DetectionError::Class { path: self.records.clone(), key: key.clone(), class: bad.class, classes }.into());
                }
            }
            if let Some(remap) = &self.remap {
                for x in b.boxes.iter_mut().flatten() {
                    x.class = remap[x.class as usize];
                }
            }
            let [c, h, w] = b.shape;
            let x = Tensor::from_slice(&b.data).view([b.n as i64, c as i64, h as i64, w as i64]).to_device(device);
            Ok(DetectionBatch { x, boxes: b.boxes, keys: b.keys })
        })
    }
}

/// The training targets of a batch: each prior's class (0 the background) `[N, P]` and the code of
/// its matched box `[N, P, 4]` (meaningful where the class is above 0).
pub struct Targets {
    pub labels: Tensor,
    pub codes: Tensor,
}

/// The priors of `spec` as a `[P, 4]` tensor on `device`.
pub fn priors_tensor(spec: &DetectorSpec, device: Device) -> Result<Tensor, DetectionError> {
    let p = spec.prior_boxes()?;
    Ok(Tensor::from_slice(p.as_flattened()).view([p.len() as i64, 4]).to_device(device))
}

/// [`models::detect::Matcher::ssd`] and [`models::detect::BoxCoder::encode`] for a whole batch on
/// the device: IoU of every ground truth with every prior, each prior takes its best ground truth at
/// IoU ≥ `spec.match_iou`, each ground truth takes its best prior (the later ground truth when two
/// share one), and the matched boxes are encoded against their priors. `boxes[i]` are image i's boxes
/// (record classes, 0-based).
pub fn match_targets(priors: &Tensor, boxes: &[Vec<BoundingBox>], spec: &DetectorSpec) -> Targets {
    let device = priors.device();
    let n = boxes.len() as i64;
    let p = priors.size()[0];
    let g = boxes.iter().map(Vec::len).max().unwrap_or(0).max(1) as i64;
    // padded ground truth: a unit box of class 0 that never matches (its IoU is set to -1)
    let mut gt = vec![0f32; (n * g * 4) as usize];
    let mut cls = vec![0i64; (n * g) as usize];
    let mut valid = vec![false; (n * g) as usize];
    for (i, bs) in boxes.iter().enumerate() {
        for j in 0..g as usize {
            let at = i * g as usize + j;
            match bs.get(j) {
                Some(b) => {
                    gt[at * 4..at * 4 + 4].copy_from_slice(&[b.x0, b.y0, b.x1, b.y1]);
                    cls[at] = b.class as i64 + 1;
                    valid[at] = true;
                }
                None => gt[at * 4..at * 4 + 4].copy_from_slice(&[0.0, 0.0, 1.0, 1.0]),
            }
        }
    }
    let gt = Tensor::from_slice(&gt).view([n, g, 4]).to_device(device);
    let cls = Tensor::from_slice(&cls).view([n, g]).to_device(device);
    let valid = Tensor::from_slice(&valid).view([n, g]).to_device(device);
    let _guard = tch::no_grad_guard();
    // IoU [N, G, P], as models::detect::iou computes it
    let iou = crate::rcnn::iou_tensor(&gt, priors);
    let iou = iou.where_self(&valid.unsqueeze(2), &iou.full_like(-1.0));
    // each prior's best ground truth
    let (best_iou, best_gt) = iou.max_dim(1, false); // [N, P]
    let mut matched = best_gt.where_self(&best_iou.ge(spec.match_iou as f64), &best_gt.full_like(-1));
    // each ground truth's best prior; a prior that several take goes to the last of them
    let best_prior = iou.argmax(2, false); // [N, G]
    let arange_p = Tensor::arange(p, (Kind::Int64, device)).view([1, 1, p]);
    let hit = best_prior.unsqueeze(2).eq_tensor(&arange_p).logical_and(&valid.unsqueeze(2)); // [N, G, P]
    let gidx = Tensor::arange(g, (Kind::Int64, device)).view([1, g, 1]);
    let forced = gidx.where_self(&hit, &gidx.full_like(-1).expand([n, g, p], false)).amax(&[1i64][..], false); // [N, P]
    matched = forced.where_self(&forced.ge(0), &matched);
    let fg = matched.ge(0);
    let idx = matched.clamp_min(0);
    let labels = cls.gather(1, &idx, false).where_self(&fg, &idx.zeros_like());
    let mbox = gt.gather(1, &idx.unsqueeze(2).expand([n, p, 4], false), false); // [N, P, 4]
    Targets { labels, codes: encode(&mbox, priors, &spec.coder.weights) }
}

/// [`models::detect::BoxCoder::encode`] of `boxes` `[…, P, 4]` against `priors` `[P, 4]`, in the same
/// f32 operations in the same order.
pub fn encode(boxes: &Tensor, priors: &Tensor, weights: &[f32; 4]) -> Tensor {
    let c = |t: &Tensor, k: i64| t.select(-1, k);
    let (pw, ph) = (c(priors, 2) - c(priors, 0), c(priors, 3) - c(priors, 1));
    let (pcx, pcy) = (c(priors, 0) + &pw * 0.5, c(priors, 1) + &ph * 0.5);
    let (gw, gh) = (c(boxes, 2) - c(boxes, 0), c(boxes, 3) - c(boxes, 1));
    let (gcx, gcy) = (c(boxes, 0) + &gw * 0.5, c(boxes, 1) + &gh * 0.5);
    let w = |k: usize| weights[k] as f64;
    Tensor::stack(&[(gcx - &pcx) * w(0) / &pw, (gcy - &pcy) * w(1) / &ph, (gw.clamp_min(1e-3) / &pw).log() * w(2), (gh.clamp_min(1e-3) / &ph).log() * w(3)], -1)
}

/// SSD's loss (Liu et al. 2016, eq. 1, as torchvision's `SSDHead.compute_loss`): Smooth L1 (β = 1)
/// of the matched priors' codes plus the cross-entropy of the matched priors and of the hardest
/// background priors, `neg_pos` of them per matched one in each image, both summed over the batch
/// and divided by the number of matched priors (at least 1). Returns (total, box part, class part).
pub fn multibox_loss(scores: &Tensor, codes: &Tensor, t: &Targets, neg_pos: f64) -> (Tensor, Tensor, Tensor) {
    let [n, p, c] = scores.size()[..] else { panic!("scores are [N, P, C], not {:?}", scores.size()) };
    let fg = t.labels.gt(0); // [N, P]
    let num_fg = fg.sum_dim_intlist(&[1i64][..], false, Kind::Int64); // [N]
    let total_fg = num_fg.sum(Kind::Float).clamp_min(1.0);
    let fgf = fg.unsqueeze(2).to_kind(codes.kind());
    let box_loss = (codes.smooth_l1_loss(&t.codes.to_kind(codes.kind()), tch::Reduction::None, 1.0) * &fgf).sum(Kind::Float);
    let ce = scores.view([n * p, c]).cross_entropy_loss::<Tensor>(&t.labels.view([n * p]), None, tch::Reduction::None, -100, 0.0).view([n, p]);
    // hard negatives: the background priors of highest loss, ranked per image
    let neg_loss = ce.detach().where_self(&fg.logical_not(), &ce.full_like(f64::NEG_INFINITY));
    let (_, order) = neg_loss.sort(1, true);
    let (_, rank) = order.sort(1, false);
    let num_neg = (num_fg.to_kind(Kind::Float) * neg_pos).floor().to_kind(Kind::Int64).unsqueeze(1);
    let hard = rank.lt_tensor(&num_neg).logical_and(&fg.logical_not());
    let keep = fg.logical_or(&hard).to_kind(ce.kind());
    let class_loss = (ce * keep).sum(Kind::Float);
    let box_loss = box_loss / &total_fg;
    let class_loss = class_loss / &total_fg;
    (&box_loss + &class_loss, box_loss, class_loss)
}

/// The detector's raw outputs for a batch: class logits `[N, P, C]` and box codes `[N, P, 4]`.
pub fn detector_outputs(net: &Net, x: &Tensor, train: bool) -> (Tensor, Tensor) {
    let spec = net.graph.detector.as_ref().expect("a detector");
    let mut outs = net.forward_outputs(x, train);
    let codes_at = net.graph.extra_outputs.iter().position(|o| o.name == spec.codes_output).expect("the spec's codes output (checked by validate)");
    let codes = outs.swap_remove(codes_at + 1);
    (outs.swap_remove(0), codes)
}

/// The heads of a detector on a `[n, C, H, W]` batch in eval mode, flat: softmax scores
/// `[n, P, classes]` and box codes `[n, P, 4]` (the exporter's parity check reads them).
pub fn heads_f32(net: &Net, x: &[f32], shape: [usize; 4]) -> (Vec<f32>, Vec<f32>) {
    let t = Tensor::from_slice(x).view(shape.map(|d| d as i64)).to_device(net.device);
    let (scores, codes) = tch::no_grad(|| detector_outputs(net, &t, false));
    let probs = scores.to_kind(Kind::Float).softmax(-1, Kind::Float).to_device(Device::Cpu).contiguous().view([-1]);
    let codes = codes.to_kind(Kind::Float).to_device(Device::Cpu).contiguous().view([-1]);
    (Vec::try_from(probs).expect("f32 scores"), Vec::try_from(codes).expect("f32 codes"))
}

/// Loss, mAP@0.5 and per-class AP of a detector on a set, in eval mode. The detections are those of
/// [`models::detect::postprocess`] (what the exported file computes) with the spec's thresholds.
pub fn evaluate_detector(net: &Net, set: &DetectionSet) -> Result<EvalMetrics, TrainError> {
    let spec = net.graph.detector.clone().ok_or_else(|| DetectionError::NotADetector { model: net.graph.name.clone() })?;
    let _guard = tch::no_grad_guard();
    let priors = priors_tensor(&spec, net.device)?;
    let prior_boxes = spec.prior_boxes().map_err(DetectionError::from)?;
    let classes = *net.graph.shape(net.graph.output).last().expect("scores have a class axis");
    let mut map = MapEvaluator::new(classes - 1, 0.5);
    let (mut loss, mut n) = (0.0, 0usize);
    for b in set.batches(0, 0, net.device) {
        let b = b?;
        let len = b.boxes.len();
        n += len;
        if spec.rcnn.is_some() {
            // the sampled anchors and regions of the loss are drawn from a fixed seed, so that
            // evaluating twice gives the same loss
            tch::manual_seed(n as i64);
            let out = crate::rcnn::image_outputs(net, &b.x, false)?;
            loss += crate::rcnn::rcnn_loss_of(net, &out, &b.boxes, &priors, false)?.0.double_value(&[]) * len as f64;
            for (truth, dets) in b.boxes.iter().zip(crate::rcnn::rcnn_detections(net, &out, &priors)?) {
                let truth: Vec<GroundTruth> =
                    truth.iter().map(|g| GroundTruth { class: g.class as usize + 1, bbox: [g.x0, g.y0, g.x1, g.y1], difficult: false }).collect();
                map.add_image(&truth, &dets).map_err(DetectionError::from)?;
            }
            continue;
        }
        let (scores, codes) = detector_outputs(net, &b.x, false);
        let t = match_targets(&priors, &b.boxes, &spec);
        loss += multibox_loss(&scores, &codes, &t, spec.neg_pos_ratio as f64).0.double_value(&[]) * len as f64;
        let probs = scores.to_kind(Kind::Float).softmax(-1, Kind::Float).to_device(Device::Cpu).contiguous();
        let codes = codes.to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
        let probs: Vec<f32> = Vec::try_from(probs.view([-1])).expect("f32 scores");
        let codes: Vec<f32> = Vec::try_from(codes.view([-1])).expect("f32 codes");
        let (ps, pc) = (prior_boxes.len() * classes, prior_boxes.len() * 4);
        for (i, truth) in b.boxes.iter().enumerate() {
            let dets = postprocess(&probs[i * ps..(i + 1) * ps], &codes[i * pc..(i + 1) * pc], &prior_boxes, &spec.coder, spec.image, &spec.postprocess)
                .map_err(DetectionError::from)?;
            let truth: Vec<GroundTruth> =
                truth.iter().map(|g| GroundTruth { class: g.class as usize + 1, bbox: [g.x0, g.y0, g.x1, g.y1], difficult: false }).collect();
            map.add_image(&truth, &dets).map_err(DetectionError::from)?;
        }
    }
    let r = map.evaluate();
    let ap = r.by_class(|k| spec.label(k));
    Ok(EvalMetrics {
        samples: n,
        loss: loss / n.max(1) as f64,
        rank1: f64::NAN,
        rank5: f64::NAN,
        one_off: None,
        map: r.mean_ap,
        coco_ap: r.coco.and_then(|c| c.ap),
        ap,
    })
}

/// `trainer eval` of a detector: `net` (restored) on the record file `data`, its classes matched to
/// the model's by name.
pub fn eval_detector(net: &Net, c: &Config, data: &Path, batch: usize) -> Result<EvalMetrics, TrainError> {
    let spec = net.graph.detector.as_ref().ok_or_else(|| DetectionError::NotADetector { model: net.graph.name.clone() })?;
    let input = net.graph.input_shape();
    let opts = LoaderOptions { batch_size: batch, ..LoaderOptions::default() };
    let set = DetectionSet::open(data, 0, detect_transform(c, input, false)?, opts)?;
    let model: Vec<String> = (1..spec.labels.len()).map(|k| spec.label(k)).collect();
    let set = if spec.labels.is_empty() { set } else { set.match_model(&model)? };
    evaluate_detector(net, &set)
}

/// The transform of a detector's input from the config (`train`: with the config's augmentation).
pub fn detect_transform(c: &Config, input: [usize; 3], train: bool) -> Result<DetectTransform, BatchError> {
    let s = batch_spec(c, input, train)?;
    let mut t = DetectTransform::eval([input[1] as u32, input[2] as u32], input[0] as u32, s.mean, s.std);
    if train {
        t.flip = c.augment.flip;
        t.crop = c.augment.crop;
        t.expand = c.augment.expand.max(1.0);
        t.photometric = c.augment.photometric;
    }
    Ok(t)
}

/// `data.prepare`: builds the data set named there into `train`'s folder when `train` is missing.
pub fn prepare_on_first_use(c: &Config) -> Result<(), TrainError> {
    let Some(name) = &c.data.prepare else { return Ok(()) };
    if c.data.train.exists() {
        return Ok(());
    }
    if name != "fashion-detect" {
        return Err(DetectionError::UnknownPrepare { name: name.clone() }.into());
    }
    let dir = c.data.train.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let fail = |reason: String| DetectionError::Prepare { what: name.clone(), dir: dir.clone(), reason };
    let root = Path::new(data::prepare::detection::FASHION_MNIST_DIR);
    tracing::info!("{} does not exist: building the Fashion-MNIST detection composites into {} (once)", c.data.train.display(), dir.display());
    let o = data::prepare::detection::CompositeOptions::new(root.join("train"), Some(root.join("t10k")));
    let prepared = data::prepare::detection::build_composites(&o).map_err(|e| fail(e.to_string()))?;
    let opts = data::records::PackOptions { short_side: 0, jpeg_quality: 0, grayscale: false };
    let report = data::prepare::write(prepared, &dir, &opts, true).map_err(|e| fail(e.to_string()))?;
    tracing::info!("{report}");
    Ok(())
}

/// The detector of `c`, its spec's labels taken from the training set's `labels.txt`.
pub fn build_detector(c: &Config, labels: &[String]) -> Result<Net, TrainError> {
    let k = c.model.num_classes.unwrap_or(labels.len());
    let graph = crate::train::model_graph(c, Some(k))?;
    let mut graph = graph.into_graph();
    let Some(spec) = graph.detector.as_mut() else { return Err(DetectionError::NotADetector { model: c.model.name.clone() }.into()) };
    if k != labels.len() {
        return Err(DetectionError::Classes { model: k, data: labels.len(), path: c.data.train.clone() }.into());
    }
    spec.labels = std::iter::once("background".to_string()).chain(labels.iter().cloned()).collect();
    let graph = graph.validate().map_err(DetectionError::from)?;
    Ok(net_for(c, graph)?)
}

/// `trainer train` for a detector (the model's zoo task is detection): one process.
pub fn train_detector(c: Config, o: &Overrides) -> Result<Vec<EpochMetrics>, TrainError> {
    let run = c.train.run.clone();
    if let Some(world) = crate::dist::Env::from_env()?.map(|e| e.world) {
        return Err(DetectionError::Distributed { world }.into());
    }
    prepare_on_first_use(&c)?;
    let interrupted = if o.resume { Some(load_interrupted(&run)?) } else { None };
    let start = interrupted.as_ref().map_or(o.start_epoch.unwrap_or(0), |i| i.epoch - 1);
    if c.train.epochs <= start {
        return Err(TrainError::Epochs { epochs: c.train.epochs, start });
    }
    if c.train.batch_size == 0 {
        return Err(TrainError::BatchSize);
    }
    let info = models::zoo::info(&c.model.name).map_err(BuildError::from)?;
    let input = [c.model.in_channels.unwrap_or(info.input[0]), info.input[1], info.input[2]];
    let bs = c.train.batch_size;
    let opts = |batch_size, shuffle| LoaderOptions { batch_size, shuffle, seed: c.train.seed, ..LoaderOptions::default() };
    let train_set = DetectionSet::open(&c.data.train, c.data.limit_train, detect_transform(&c, input, true)?, opts(bs, true))?;
    let val_set = c.data.val.as_ref().map(|v| DetectionSet::open(v, c.data.limit_val, detect_transform(&c, input, false)?, opts(64, false))).transpose()?;
    if let Some(v) = &val_set {
        if v.labels != train_set.labels {
            tracing::warn!(
                "the validation set's labels.txt {:?} differs from the training set's {:?}; the training set's names are used",
                v.labels,
                train_set.labels
            );
        }
    }
    let mut net = build_detector(&c, &train_set.labels)?;
    let spec = net.graph.detector.clone().expect("built as a detector");
    let device = net.device;
    let mut opt = crate::train::optimizer_of(&c);
    std::fs::create_dir_all(&run).map_err(|source| TrainError::RunDir { run: run.clone(), source })?;
    if let (Some(src), None, 0) = (&c.model.init_from, &interrupted, start) {
        let n = net.load_except(src, &c.model.init_skip).map_err(|source| TrainError::InitFrom { path: src.clone(), source })?;
        tracing::info!("initialised {n} tensors from {} (kept fresh: {:?})", src.display(), c.model.init_skip);
    }
    restore_start(&run, start, interrupted.is_some(), &mut net, &mut opt)?;
    record_run(&run, &c, &net.graph)?;
    let mut log = RunLog::open(&run, start)?;
    let priors = priors_tensor(&spec, device)?;
    log.say(&format!(
        "{} {}: {} ({} classes, {} priors; {} train, {} val images) on {device:?}, batch {bs}, epochs {}..={}, lr {}",
        match (&interrupted, start) {
            (Some(i), _) => format!("resume at step {} of epoch {} of", i.step + 1, i.epoch),
            (None, 0) => "start".into(),
            (None, _) => "resume".into(),
        },
        run.display(),
        c.model.name,
        train_set.labels.len(),
        spec.num_priors(),
        train_set.len(),
        val_set.as_ref().map_or(0, DetectionSet::len),
        start + 1,
        c.train.epochs,
        c.train.lr
    ))?;
    let checkpoint_info = |epoch, lr, metrics| checkpoint_info(&c, 1, epoch, lr, metrics);
    let batches = train_set.batches_per_epoch() as i64;
    let mut history = vec![];
    let mut interrupted = interrupted;
    for epoch in start + 1..=c.train.epochs {
        let lr = c.schedule.lr(c.train.lr, epoch - 1);
        let bar = crate::progress::bar(batches as u64, &format!("epoch {epoch}/{}", c.train.epochs));
        let t0 = Instant::now();
        let (skip, partial) = match interrupted.take() {
            Some(i) => (i.step, i.partial.unwrap_or_default()),
            None => (0, [0.0; 4]),
        };
        // sums: total loss × images, box loss × images, class loss × images, images
        let mut sums = partial;
        bar.inc(skip as u64);
        let mut last_note = Instant::now();
        let mut stream = train_set.batches(epoch, skip, device);
        for b in skip as i64..batches {
            tch::manual_seed(step_seed(c.train.seed, epoch, b as usize + 1));
            let Some(batch) = stream.next() else { break };
            let batch = batch?;
            let len = batch.boxes.len();
            for (_, p) in net.trainable() {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            let (loss, box_loss, class_loss) = if spec.rcnn.is_some() {
                crate::rcnn::rcnn_loss(&net, &batch.x, &batch.boxes, &priors, true)?
            } else {
                let targets = match_targets(&priors, &batch.boxes, &spec);
                let (scores, codes) = detector_outputs(&net, &batch.x, true);
                multibox_loss(&scores, &codes, &targets, spec.neg_pos_ratio as f64)
            };
            loss.backward();
            let l = loss.double_value(&[]);
            if !l.is_finite() {
                return Err(TrainError::Diverged { epoch, batch: b + 1, loss: l, lr });
            }
            opt.step(&net.trainable(), lr)?;
            let n = len as f64;
            for (s, v) in sums.iter_mut().zip([l * n, box_loss.double_value(&[]) * n, class_loss.double_value(&[]) * n, n]) {
                *s += v;
            }
            bar.inc(1);
            let images = sums[3].max(1.0);
            if c.train.log_every > 0 && (b + 1) % c.train.log_every as i64 == 0 {
                let msg = format!("loss {:.4} (boxes {:.4}, classes {:.4})", sums[0] / images, sums[1] / images, sums[2] / images);
                bar.set_message(msg.clone());
                log.json(&serde_json::json!({"epoch": epoch, "batch": b + 1, "loss": sums[0] / images, "box_loss": sums[1] / images, "class_loss": sums[2] / images, "lr": lr}))?;
            }
            if bar.is_hidden() && last_note.elapsed() >= std::time::Duration::from_secs(20) && b + 1 < batches {
                last_note = Instant::now();
                let eta = t0.elapsed().as_secs_f64() / (b + 1 - skip as i64) as f64 * (batches - b - 1) as f64;
                tracing::info!("epoch {epoch}/{} batch {}/{batches}: loss {:.4}, {eta:.0}s left in the epoch", c.train.epochs, b + 1, sums[0] / images);
            }
            if crate::progress::interrupted() {
                bar.finish_and_clear();
                let info = CheckpointInfo { step: b as usize + 1, partial: Some(sums), ..checkpoint_info(epoch, lr, None) };
                save_checkpoint(&run, &net, &opt, &info)?;
                log.say(&format!(
                    "interrupted at step {}/{batches} of epoch {epoch}; saved {}; continue with `trainer train --config {} --resume`",
                    b + 1,
                    interrupted_paths(&run).0.display(),
                    RunDir::new(&run).config_path().display()
                ))?;
                return Ok(history);
            }
        }
        bar.finish_and_clear();
        drop(stream);
        let train_secs = t0.elapsed().as_secs_f64();
        let val = val_set.as_ref().map(|v| evaluate_detector(&net, v)).transpose()?;
        let images = sums[3].max(1.0);
        let m = EpochMetrics {
            epoch,
            lr,
            train_loss: sums[0] / images,
            train_rank1: f64::NAN,
            train_rank5: f64::NAN,
            val: val.clone(),
            seconds: t0.elapsed().as_secs_f64(),
            samples_per_sec: sums[3] / train_secs,
        };
        log.json(&serde_json::to_value(&m).expect("epoch metrics are plain numbers"))?;
        let val_text = val.map_or(String::new(), |v| {
            let per: Vec<String> = v.ap.iter().map(|a| format!("{} {}", a.label, a.ap.map_or("-".into(), |x| format!("{x:.3}")))).collect();
            let coco = v.coco_ap.map_or(String::new(), |c| format!(", COCO AP {c:.4}"));
            format!(", val loss {:.4} mAP@0.5 {} ({}){coco}", v.loss, v.map.map_or("-".into(), |x| format!("{x:.4}")), per.join(", "))
        });
        log.say(&format!(
            "epoch {epoch}/{} lr {lr}: train loss {:.4} (boxes {:.4}, classes {:.4}){val_text} ({:.1}s, {:.0} images/s)",
            c.train.epochs,
            m.train_loss,
            sums[1] / images,
            sums[2] / images,
            m.seconds,
            m.samples_per_sec
        ))?;
        if epoch % c.train.checkpoint_every.max(1) == 0 || epoch == c.train.epochs {
            save_checkpoint(&run, &net, &opt, &checkpoint_info(epoch, lr, Some(m.clone())))?;
            checkpoint_saved(&run, epoch, c.train.keep_checkpoints)?;
        }
        history.push(m);
    }
    Ok(history)
}

//! Detectors in ONNX Runtime: our exports (task `detection` in the metadata: float32 `[N, C, H, W]`
//! in, the TFOD contract out with boxes in input pixels) run by [`Detector`], evaluated on record
//! files with boxes by mAP@0.5 per class exactly as `trainer eval` measures it ([`evaluate`]: the same
//! loader transform, the same [`MapEvaluator`]), and run on images ([`predict`]) with the boxes in
//! each image's own pixels.

use std::path::{Path, PathBuf};
use std::time::Instant;

use data::records::RecordFile;
use data::{DetectTransform, Loader, LoaderOptions};
use models::detect::{Detection, DetectorSpec, GroundTruth, MapEvaluator};
use models::meta::{ModelMeta, Task};
use ort::session::Session;
use ort::value::TensorRef;
use serde::Serialize;

use crate::engine::{metadata_props, open_session, Provider, RuntimeError, SessionOptions};
use crate::model::Model;
use crate::preprocess::PreprocessArgs;

/// The four outputs of the TFOD contract.
const BOXES: &str = "detection_boxes";
const SCORES: &str = "detection_scores";
const CLASSES: &str = "detection_classes";
const NUM: &str = "num_detections";

/// Why a detector could not be evaluated or run; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{}: {reason}", path.display())]
    Data { path: PathBuf, reason: String },
    #[error("{}: the data's classes {missing:?} are not among the model's {model:?} (classes are matched by name; labels.txt beside the records)", path.display())]
    UnknownClasses { path: PathBuf, missing: Vec<String>, model: Vec<String> },
}

type Result<T, E = DetectError> = std::result::Result<T, E>;

/// One of our exported detectors, opened.
pub struct Detector {
    pub path: PathBuf,
    pub provider: Provider,
    session: Session,
    input_name: String,
    pub meta: ModelMeta,
    pub spec: DetectorSpec,
    /// How an image becomes the input (a resize to the input size, the file's normalisation).
    pub transform: DetectTransform,
    /// Class names, index 0 the background.
    pub labels: Vec<String>,
}

/// A file opened as what its metadata says it is.
pub enum Opened {
    Classifier(Box<Model>),
    Detector(Box<Detector>),
}

/// Opens the file at `path` once: one of our detectors (task `detection` in its metadata) as a
/// [`Detector`], anything else as a classifier [`Model`] with `args` laid over its preprocessing.
pub fn open_any(path: &Path, opts: &SessionOptions, args: &PreprocessArgs) -> Result<Opened> {
    let session = open_session(path, opts)?;
    let props = metadata_props(&session).map_err(|reason| RuntimeError::Model { path: path.to_path_buf(), reason })?;
    if ModelMeta::from_props(&props).ok().flatten().is_some_and(|m| m.task == Task::Detection) {
        Ok(Opened::Detector(Box::new(Detector::from_session(path, opts.provider, session)?)))
    } else {
        Ok(Opened::Classifier(Box::new(Model::from_session(path, opts.provider, session, args)?)))
    }
}

impl Detector {
    pub fn open(path: &Path, opts: &SessionOptions) -> Result<Self> {
        Self::from_session(path, opts.provider, open_session(path, opts)?)
    }

    /// The detector of a session already opened from `path` on `provider`.
    pub fn from_session(path: &Path, provider: Provider, session: Session) -> Result<Self> {
        let err = |reason: String| RuntimeError::Model { path: path.to_path_buf(), reason };
        let props = metadata_props(&session).map_err(err)?;
        let meta =
            ModelMeta::from_props(&props).map_err(|e| err(e.to_string()))?.ok_or_else(|| err("has no dlcv.* metadata: not one of our detectors".into()))?;
        let spec = meta.detector.clone().ok_or_else(|| err(format!("its task is {}, not detection", meta.task)))?;
        for name in [BOXES, SCORES, CLASSES, NUM] {
            if !session.outputs().iter().any(|o| o.name() == name) {
                return Err(err(format!("has no '{name}' output (the TFOD contract)")).into());
            }
        }
        let input_name = session.inputs().first().map(|i| i.name().to_string()).ok_or_else(|| err("has no input".into()))?;
        let [c, h, w] = meta.preprocessing.input;
        let transform = DetectTransform::eval([h as u32, w as u32], c as u32, meta.preprocessing.mean.clone(), meta.preprocessing.std.clone());
        let labels = if meta.labels.is_empty() { (0..spec.labels.len()).map(|k| spec.label(k)).collect() } else { meta.labels.clone() };
        Ok(Detector { path: path.to_path_buf(), provider, session, input_name, meta, spec, transform, labels })
    }

    /// `[C, H, W]` of the input.
    pub fn input(&self) -> [usize; 3] {
        self.meta.preprocessing.input
    }

    /// The foreground class names (class k is `labels[k]`, k ≥ 1).
    pub fn classes(&self) -> &[String] {
        &self.labels[1..]
    }

    /// Runs `n` preprocessed images; each image's detections in input pixels, best first.
    pub fn run(&mut self, data: &[f32], n: usize) -> Result<Vec<Vec<Detection>>> {
        let err = |reason: String| RuntimeError::Model { path: self.path.clone(), reason };
        let [c, h, w] = self.input();
        if data.len() != n * c * h * w {
            return Err(err(format!("{} floats for {n} images of {c}x{h}x{w}", data.len())).into());
        }
        let tensor = TensorRef::from_array_view(([n, c, h, w], data)).map_err(|e| err(e.to_string()))?;
        let outputs = self.session.run(ort::inputs![self.input_name.as_str() => tensor]).map_err(|e| err(format!("inference failed: {e}")))?;
        let get = |name: &str| -> Result<(Vec<usize>, Vec<f32>), RuntimeError> {
            let (shape, v) = outputs[name].try_extract_tensor::<f32>().map_err(|e| err(format!("output '{name}': {e}")))?;
            Ok((shape.iter().map(|&d| d as usize).collect(), v.to_vec()))
        };
        let ((bshape, boxes), (_, scores), (_, classes), (_, num)) = (get(BOXES)?, get(SCORES)?, get(CLASSES)?, get(NUM)?);
        let m = bshape.get(1).copied().unwrap_or(0);
        if bshape != [n, m, 4] || scores.len() != n * m || classes.len() != n * m || num.len() != n {
            return Err(err(format!("detection outputs of shape {bshape:?} for {n} images")).into());
        }
        let k = self.labels.len();
        let mut out = Vec::with_capacity(n);
        for (i, &found) in num.iter().enumerate() {
            let count = (found.max(0.0) as usize).min(m);
            let mut dets = Vec::with_capacity(count);
            for j in 0..count {
                let at = i * m + j;
                let class = classes[at] as usize;
                if class == 0 || class >= k {
                    return Err(err(format!("image {i}: detection {j} has class {} outside 1..{k}", classes[at])).into());
                }
                let b = &boxes[at * 4..at * 4 + 4];
                dets.push(Detection { class, score: scores[at], bbox: [b[0], b[1], b[2], b[3]] });
            }
            out.push(dets);
        }
        Ok(out)
    }
}

pub use models::detect::ClassAp;

/// What `runtime eval` reports for a detector.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionReport {
    pub model: String,
    pub data: String,
    pub provider: String,
    pub images: usize,
    pub skipped: Vec<(String, String)>,
    /// mAP@0.5 (TFOD's PASCAL evaluator, the book's), over the classes with ground truth.
    pub map: Option<f64>,
    pub per_class: Vec<ClassAp>,
    pub seconds: f64,
    pub images_per_sec: f64,
}

impl std::fmt::Display for DetectionReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model {} on {} (detector)", self.model, self.provider)?;
        writeln!(f, "data {}: {} images, {} skipped", self.data, self.images, self.skipped.len())?;
        for (name, why) in self.skipped.iter().take(10) {
            writeln!(f, "  skipped {name}: {why}")?;
        }
        writeln!(f, "mAP@0.5 {}", self.map.map_or("- (no ground truth)".into(), |m| format!("{m:.4}")))?;
        writeln!(f, "{:<24} {:>8} {:>8} {:>10}", "class", "AP@0.5", "objects", "detections")?;
        for c in &self.per_class {
            writeln!(f, "{:<24} {:>8} {:>8} {:>10}", c.label, c.ap.map_or("-".into(), |v| format!("{v:.4}")), c.objects, c.detections)?;
        }
        write!(f, "{:.1} images/s ({:.2} s)", self.images_per_sec, self.seconds)
    }
}

/// mAP@0.5 of `det` on the record file `data` (boxes, `labels.txt` beside it), the data's classes
/// matched to the model's by name.
pub fn evaluate(det: &mut Detector, data: &Path, batch: usize, workers: usize, progress: bool) -> Result<DetectionReport> {
    let derr = |reason: String| DetectError::Data { path: data.to_path_buf(), reason };
    let file = RecordFile::open(data).map_err(|e| derr(e.to_string()))?;
    let dir = data::folder::DatasetDir::of_records(data);
    let names =
        dir.labels().map_err(|e| derr(e.to_string()))?.ok_or_else(|| derr("no labels.txt beside it: a detection set names its classes there".into()))?;
    let model: Vec<String> = det.classes().to_vec();
    // data class k (0-based) → model class (1-based)
    let to_model: Vec<usize> = models::detect::match_classes(&names, &model)
        .map_err(|missing| DetectError::UnknownClasses { path: data.to_path_buf(), missing, model: model.clone() })?
        .into_iter()
        .map(|k| k + 1)
        .collect();
    let total = file.len();
    let loader = Loader::detection(file, det.transform.clone(), LoaderOptions { batch_size: batch.max(1), workers, ..LoaderOptions::default() });
    let bar = data::progress::bar(loader.batches_per_epoch() as u64, "eval", progress);
    let mut map = MapEvaluator::new(model.len(), 0.5);
    let (mut images, mut skipped) = (0, vec![]);
    let t0 = Instant::now();
    for b in loader.epoch(0) {
        let b = b.map_err(|e| derr(e.to_string()))?;
        skipped.extend(b.skipped.iter().cloned());
        let found = det.run(&b.data, b.n)?;
        for ((key, truth), dets) in b.keys.iter().zip(&b.boxes).zip(&found) {
            let mut gt = Vec::with_capacity(truth.len());
            for g in truth {
                let class = *to_model
                    .get(g.class as usize)
                    .ok_or_else(|| derr(format!("record '{key}': box class {} has no name in labels.txt ({} names)", g.class, names.len())))?;
                gt.push(GroundTruth { class, bbox: [g.x0, g.y0, g.x1, g.y1], difficult: false });
            }
            map.add_image(&gt, dets).map_err(|e| derr(e.to_string()))?;
        }
        images += b.n;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    if images == 0 {
        return Err(derr(format!("none of the {total} images could be used ({} skipped)", skipped.len())));
    }
    let r = map.evaluate();
    let per_class = r.by_class(|k| model[k - 1].clone());
    Ok(DetectionReport {
        model: det.path.display().to_string(),
        data: data.display().to_string(),
        provider: det.provider.to_string(),
        images,
        skipped,
        map: r.mean_ap,
        per_class,
        seconds,
        images_per_sec: images as f64 / seconds.max(1e-9),
    })
}

/// One detection in an image's own pixels.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Found {
    pub label: String,
    pub class: usize,
    pub score: f32,
    /// `[x0, y0, x1, y1]` in pixels of the image.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// `runtime predict`'s answer for one image (one JSON line).
#[derive(Debug, Clone, Serialize)]
pub struct ImageDetections {
    pub image: String,
    pub width: u32,
    pub height: u32,
    pub detections: Vec<Found>,
}

/// Detections of `image` (decoded RGB or grey at its own size) at `min_score` and above, in its pixels.
pub fn detect_image(det: &mut Detector, img: &data::image::DynamicImage, min_score: f32) -> Result<Vec<Found>> {
    let [c, h, w] = det.input();
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let (px, bpp) = if c == 1 { (data::records::to_gray(img).into_raw(), 1) } else { (img.to_rgb8().into_raw(), 3) };
    let mut x = vec![0f32; c * h * w];
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(0);
    det.transform.apply(&px, iw, ih, bpp, &[], &mut rng, &mut x);
    let dets = det.run(&x, 1)?.pop().unwrap_or_default();
    let (sx, sy) = (iw as f32 / w as f32, ih as f32 / h as f32);
    Ok(dets
        .into_iter()
        .filter(|d| d.score >= min_score)
        .map(|d| Found {
            label: det.labels[d.class].clone(),
            class: d.class,
            score: d.score,
            bbox: [d.bbox[0] * sx, d.bbox[1] * sy, d.bbox[2] * sx, d.bbox[3] * sy],
        })
        .collect())
}

/// One colour per class (the book's `predict.py` draws each class in its own colour).
pub fn class_colour(class: usize) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 8] = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230]];
    PALETTE[class % PALETTE.len()]
}

/// Draws each detection's box (2 px, the class's colour) and a label bar onto `img`.
pub fn draw(img: &mut data::image::RgbImage, found: &[Found]) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    for f in found {
        let colour = data::image::Rgb(class_colour(f.class));
        let [x0, y0, x1, y1] = f.bbox.map(|v| v.round() as i64);
        let (x0, x1, y0, y1) = (x0.clamp(0, w - 1), x1.clamp(0, w - 1), y0.clamp(0, h - 1), y1.clamp(0, h - 1));
        for t in 0..2 {
            for x in x0..=x1 {
                for y in [y0 + t, y1 - t] {
                    if (0..h).contains(&y) {
                        img.put_pixel(x as u32, y as u32, colour);
                    }
                }
            }
            for y in y0..=y1 {
                for x in [x0 + t, x1 - t] {
                    if (0..w).contains(&x) {
                        img.put_pixel(x as u32, y as u32, colour);
                    }
                }
            }
        }
        // a filled tab above the box, as long as the score (a label's text is in --json)
        let tab = ((x1 - x0) as f32 * f.score.clamp(0.0, 1.0)) as i64;
        for y in (y0 - 4).max(0)..y0 {
            for x in x0..=(x0 + tab).min(w - 1) {
                img.put_pixel(x as u32, y as u32, colour);
            }
        }
    }
}

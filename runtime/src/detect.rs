//! Detectors in ONNX Runtime: our exports (task `detection` in the metadata: float32 `[N, C, H, W]`
//! in, the TFOD contract out with boxes in input pixels) run by [`Detector`], evaluated on record
//! files with boxes by mAP@0.5 per class exactly as `trainer eval` measures it ([`evaluate`]: the same
//! loader transform, the same [`MapEvaluator`]), and run on images ([`predict`]) with the boxes in
//! each image's own pixels.

use std::path::{Path, PathBuf};
use std::time::Instant;

use data::records::RecordFile;
use data::{DetectTransform, Loader, LoaderOptions};
use models::detect::{scale_box, Detection, GroundTruth, MapEvaluator};
use models::meta::{ModelMeta, Task};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
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

/// How a detector takes its images and gives its boxes.
#[derive(Debug, Clone)]
pub enum Contract {
    /// One of our exports: float32 `[N, C, H, W]` normalised as its metadata says, boxes
    /// `[x0, y0, x1, y1]` in input pixels.
    Ours {
        /// The file's metadata; its `detector` spec is checked present.
        meta: Box<ModelMeta>,
        /// How an image becomes the input (a resize to the input size, the file's normalisation).
        transform: DetectTransform,
    },
    /// A model made elsewhere in the TFOD export contract (TFOD's exporter, then tf2onnx): uint8
    /// `[N, H, W, 3]` RGB of any size, boxes normalised `[ymin, xmin, ymax, xmax]`, no metadata.
    /// Images are brought to `size` first (`[H, W]`: the input's own when the file fixes it, else
    /// `--size`, else TFOD SSD's 300x300, the size its SSDs resize to inside the graph anyway).
    Tfod { size: [usize; 2] },
}

/// A detector opened: one of our exports or a TFOD-contract model made elsewhere.
pub struct Detector {
    pub path: PathBuf,
    pub provider: Provider,
    session: Session,
    input_name: String,
    /// The four TFOD outputs' names in the file (TF's exports end them in `:0`).
    outputs: [String; 4],
    pub contract: Contract,
    /// Class names, index 0 the background; empty for a foreign model without `--labels` (classes
    /// are then named by number).
    pub labels: Vec<String>,
}

/// The training size of TFOD's SSD models, which the book's exports keep.
const TFOD_SIZE: [usize; 2] = [300, 300];

/// A file opened as what its metadata (or, without it, its signature) says it is.
pub enum Opened {
    Classifier(Box<Model>),
    Detector(Box<Detector>),
}

/// The session's name for each TFOD output (`detection_boxes` or TF's `detection_boxes:0`), if all four are there.
fn tfod_outputs(session: &Session) -> Option<[String; 4]> {
    let find = |want: &str| session.outputs().iter().map(|o| o.name()).find(|n| *n == want || n.strip_suffix(":0") == Some(want)).map(str::to_string);
    Some([find(BOXES)?, find(SCORES)?, find(CLASSES)?, find(NUM)?])
}

/// Opens the file at `path` once: one of our detectors (task `detection` in its metadata) or a model
/// in the TFOD contract as a [`Detector`], anything else as a classifier [`Model`], with `args`
/// laid over what the file says.
pub fn open_any(path: &Path, opts: &SessionOptions, args: &PreprocessArgs) -> Result<Opened> {
    let session = open_session(path, opts)?;
    let props = metadata_props(&session).map_err(|reason| RuntimeError::Model { path: path.to_path_buf(), reason })?;
    let meta = ModelMeta::from_props(&props).ok().flatten();
    let detector = match &meta {
        Some(m) => m.task == Task::Detection,
        None => tfod_outputs(&session).is_some(),
    };
    if detector {
        Ok(Opened::Detector(Box::new(Detector::from_session(path, opts.provider, session, args)?)))
    } else {
        Ok(Opened::Classifier(Box::new(Model::from_session(path, opts.provider, session, args)?)))
    }
}

impl Detector {
    pub fn open(path: &Path, opts: &SessionOptions, args: &PreprocessArgs) -> Result<Self> {
        Self::from_session(path, opts.provider, open_session(path, opts)?, args)
    }

    /// The detector of a session already opened from `path` on `provider`: ours from its metadata,
    /// else a TFOD-contract model (uint8 NHWC in) with `--size` and `--labels` from `args`.
    pub fn from_session(path: &Path, provider: Provider, session: Session, args: &PreprocessArgs) -> Result<Self> {
        let err = |reason: String| RuntimeError::Model { path: path.to_path_buf(), reason };
        let props = metadata_props(&session).map_err(err)?;
        let meta = ModelMeta::from_props(&props).map_err(|e| err(e.to_string()))?;
        let outputs = tfod_outputs(&session).ok_or_else(|| {
            let have: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
            err(format!("has outputs {have:?}, not the TFOD contract's {BOXES}, {SCORES}, {CLASSES} and {NUM}"))
        })?;
        let [input] = session.inputs() else {
            return Err(err(format!("has {} inputs; a detector takes one image tensor", session.inputs().len())).into());
        };
        let input_name = input.name().to_string();
        let from_file = match &args.labels {
            Some(file) => Some(data::labels::read(file).map_err(|e| err(e.to_string()))?),
            None => None,
        };
        let ignored = [
            ("--layout", args.layout.is_some()),
            ("--gray", args.gray),
            ("--mean", args.mean.is_some()),
            ("--std", args.std.is_some()),
            ("--crop", args.crop.is_some()),
            ("--resize-short", args.resize_short.is_some()),
            ("--size", meta.is_some() && args.size.is_some()),
        ];
        if let Some((flag, _)) = ignored.iter().find(|(_, set)| *set) {
            let why = if meta.is_some() {
                "our exported detectors take their input size and normalisation from their metadata"
            } else {
                "a TFOD-contract detector takes uint8 RGB as it is (only --size and --labels apply)"
            };
            return Err(err(format!("{flag}: {why}")).into());
        }
        let (contract, labels) = match meta {
            Some(meta) => {
                let spec = meta.detector.as_ref().ok_or_else(|| err(format!("its task is {}, not detection", meta.task)))?;
                let [c, h, w] = meta.preprocessing.input;
                let transform = DetectTransform::eval([h as u32, w as u32], c as u32, meta.preprocessing.mean.clone(), meta.preprocessing.std.clone());
                let mut labels: Vec<String> =
                    if meta.labels.is_empty() { (0..spec.labels.len()).map(|k| spec.label(k)).collect() } else { meta.labels.clone() };
                // --labels renames the foreground classes; the background keeps its name
                if let Some(names) = from_file {
                    if names.len() + 1 != labels.len() {
                        return Err(err(format!("--labels names {} classes but the detector has {}", names.len(), labels.len() - 1)).into());
                    }
                    labels.truncate(1);
                    labels.extend(names);
                }
                (Contract::Ours { meta: Box::new(meta), transform }, labels)
            }
            None => {
                let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
                    return Err(err(format!("input '{input_name}' is {}, not a tensor", input.dtype())).into());
                };
                if *ty != TensorElementType::Uint8 || shape.len() != 4 || !matches!(shape[3], 3 | -1) {
                    return Err(err(format!(
                        "input '{input_name}' is {ty:?} {shape:?} and the file has no dlcv.* metadata: a detector made elsewhere must take the TFOD contract's uint8 [N, H, W, 3]"
                    ))
                    .into());
                }
                // a fixed H x W in the file is the size; a dynamic one takes --size, else TFOD SSD's 300x300
                let fixed = (shape[1] > 0 && shape[2] > 0).then(|| [shape[1] as usize, shape[2] as usize]);
                let size = match (fixed, args.size.map(|s| [s.height as usize, s.width as usize])) {
                    (Some(f), Some(g)) if f != g => {
                        return Err(err(format!("--size {}x{}: input '{input_name}' is fixed at {}x{} (W x H)", g[1], g[0], f[1], f[0])).into());
                    }
                    (Some(f), _) => f,
                    (None, Some(g)) => g,
                    (None, None) => TFOD_SIZE,
                };
                // TFOD label maps number the classes from 1; the background has no name there
                let labels = from_file.map(|names| std::iter::once("background".to_string()).chain(names).collect()).unwrap_or_default();
                (Contract::Tfod { size }, labels)
            }
        };
        Ok(Detector { path: path.to_path_buf(), provider, session, input_name, outputs, contract, labels })
    }

    /// The image size the model works at, `[H, W]`: callers that resize frames anyway (edge-demo)
    /// bring them to this.
    pub fn image_size(&self) -> [usize; 2] {
        match &self.contract {
            Contract::Ours { meta, .. } => [meta.preprocessing.input[1], meta.preprocessing.input[2]],
            Contract::Tfod { size } => *size,
        }
    }

    /// Bytes per pixel of the images [`Detector::detect_pixels`] takes: 1 (grey) or 3 (RGB).
    pub fn channels(&self) -> usize {
        match &self.contract {
            Contract::Ours { meta, .. } => meta.preprocessing.input[0],
            Contract::Tfod { .. } => 3,
        }
    }

    /// The name of class `k` (1-based): its label, or its number when the model names none.
    pub fn label(&self, k: usize) -> String {
        self.labels.get(k).cloned().unwrap_or_else(|| k.to_string())
    }

    /// The foreground class names (class k is `labels[k]`, k ≥ 1).
    pub fn classes(&self) -> &[String] {
        self.labels.get(1..).unwrap_or(&[])
    }

    /// One image's values for `runtime bench`: floats for ours, bytes for a TFOD model.
    pub fn sample_len(&self) -> usize {
        let [h, w] = self.image_size();
        self.channels() * h * w
    }

    /// Runs `n` preprocessed images (ours: float32 `[N, C, H, W]`); each image's detections in input
    /// pixels, best first.
    pub fn run(&mut self, data: &[f32], n: usize) -> Result<Vec<Vec<Detection>>> {
        let err = |reason: String| RuntimeError::Model { path: self.path.clone(), reason };
        let Contract::Ours { meta, .. } = &self.contract else {
            return Err(err("is a TFOD-contract model: it takes uint8 images (run_rgb8)".into()).into());
        };
        let [c, h, w] = meta.preprocessing.input;
        if data.len() != n * c * h * w {
            return Err(err(format!("{} floats for {n} images of {c}x{h}x{w}", data.len())).into());
        }
        let tensor = TensorRef::from_array_view(([n, c, h, w], data)).map_err(|e| err(e.to_string()))?;
        self.infer(tensor.into(), n, None)
    }

    /// Runs `n` RGB images of `h`x`w` pixels, packed (a TFOD model's uint8 `[N, H, W, 3]`); each
    /// image's detections in its pixels, best first.
    pub fn run_rgb8(&mut self, data: &[u8], n: usize, [h, w]: [usize; 2]) -> Result<Vec<Vec<Detection>>> {
        let err = |reason: String| RuntimeError::Model { path: self.path.clone(), reason };
        if !matches!(self.contract, Contract::Tfod { .. }) {
            return Err(err("is one of our exports: it takes float32 [N, C, H, W] (run)".into()).into());
        }
        if data.len() != n * h * w * 3 {
            return Err(err(format!("{} bytes for {n} RGB images of {w}x{h}", data.len())).into());
        }
        let tensor = TensorRef::from_array_view(([n, h, w, 3], data)).map_err(|e| err(e.to_string()))?;
        self.infer(tensor.into(), n, Some([h as f32, w as f32]))
    }

    /// Runs the session on `input` and reads the four outputs; `normalised` (the images' `[H, W]`)
    /// when the boxes come as TFOD's normalised `[ymin, xmin, ymax, xmax]`.
    fn infer(&mut self, input: ort::session::SessionInputValue<'_>, n: usize, normalised: Option<[f32; 2]>) -> Result<Vec<Vec<Detection>>> {
        let err = |reason: String| RuntimeError::Model { path: self.path.clone(), reason };
        let outputs = self.session.run(ort::inputs![self.input_name.as_str() => input]).map_err(|e| err(format!("inference failed: {e}")))?;
        let get = |name: &str| -> Result<(Vec<usize>, Vec<f32>), RuntimeError> {
            let (shape, v) = outputs[name].try_extract_tensor::<f32>().map_err(|e| err(format!("output '{name}': {e}")))?;
            Ok((shape.iter().map(|&d| d as usize).collect(), v.to_vec()))
        };
        let [ob, os, oc, on] = &self.outputs;
        let ((bshape, boxes), (_, scores), (_, classes), (_, num)) = (get(ob)?, get(os)?, get(oc)?, get(on)?);
        let m = bshape.get(1).copied().unwrap_or(0);
        if bshape != [n, m, 4] || scores.len() != n * m || classes.len() != n * m || num.len() != n {
            return Err(err(format!("detection outputs of shape {bshape:?} for {n} images")).into());
        }
        // a class beyond the labels is an error in our exports, which name every class; TFOD label maps
        // have gaps (COCO's ids run to 90 for 80 names), so there a class without a name gets its number
        let k = if matches!(self.contract, Contract::Ours { .. }) { self.labels.len() } else { usize::MAX };
        let mut out = Vec::with_capacity(n);
        for (i, &found) in num.iter().enumerate() {
            let count = (found.max(0.0) as usize).min(m);
            let mut dets = Vec::with_capacity(count);
            for j in 0..count {
                let at = i * m + j;
                let class = classes[at] as usize;
                if class == 0 || class >= k {
                    return Err(
                        err(format!("image {i} of the batch: detection {j} has class {} outside 1..{k} (the classes of its metadata)", classes[at])).into()
                    );
                }
                let b = &boxes[at * 4..at * 4 + 4];
                let bbox = match normalised {
                    None => [b[0], b[1], b[2], b[3]],
                    Some([h, w]) => [b[1] * w, b[0] * h, b[3] * w, b[2] * h],
                };
                dets.push(Detection { class, score: scores[at], bbox });
            }
            out.push(dets);
        }
        Ok(out)
    }

    /// Detections at `min_score` and above of one packed image of `iw`x`ih` pixels with
    /// [`Detector::channels`] bytes each (RGB or grey), in its pixels. A TFOD model gets the image
    /// as it is: bring it to [`Detector::image_size`] first to save the graph's own resize.
    pub fn detect_pixels(&mut self, px: &[u8], iw: usize, ih: usize, min_score: f32) -> Result<Vec<Found>> {
        let dets = match &self.contract {
            Contract::Ours { meta, transform, .. } => {
                let [c, h, w] = meta.preprocessing.input;
                let mut x = vec![0f32; c * h * w];
                let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(0);
                transform.apply(px, iw, ih, c, &[], &mut rng, &mut x);
                let (sx, sy) = (iw as f32 / w as f32, ih as f32 / h as f32);
                let dets = self.run(&x, 1)?.pop().unwrap_or_default();
                dets.into_iter().map(|d| Detection { bbox: scale_box(&d.bbox, sx, sy), ..d }).collect()
            }
            Contract::Tfod { .. } => self.run_rgb8(px, 1, [ih, iw])?.pop().unwrap_or_default(),
        };
        Ok(dets
            .into_iter()
            .filter(|d| d.score >= min_score)
            .map(|d| Found { label: self.label(d.class), class: d.class, score: d.score, bbox: d.bbox })
            .collect())
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
    /// COCO's AP@[.5:.95] (pycocotools' COCOeval) of the same detections, the second metric.
    pub coco_ap: Option<f64>,
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
        if let Some(c) = self.coco_ap {
            writeln!(f, "COCO AP@[.5:.95] {c:.4}")?;
        }
        writeln!(f, "{}", models::detect::ap_table(&self.per_class))?;
        write!(f, "{:.1} images/s ({:.2} s)", self.images_per_sec, self.seconds)
    }
}

/// mAP@0.5 of `det` on the record file `data` (boxes, `labels.txt` beside it), the data's classes
/// matched to the model's by name.
pub fn evaluate(det: &mut Detector, data: &Path, batch: usize, workers: usize, progress: bool) -> Result<DetectionReport> {
    let derr = |reason: String| DetectError::Data { path: data.to_path_buf(), reason };
    let Contract::Ours { transform, .. } = &det.contract else {
        return Err(derr(format!(
            "{} is a TFOD-contract model made elsewhere: eval reads our exports' preprocessing from their metadata; predict, bench and edge-demo detect run it",
            det.path.display()
        )));
    };
    let transform = transform.clone();
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
    let loader = Loader::detection(file, transform, LoaderOptions { batch_size: batch.max(1), workers, ..LoaderOptions::default() });
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
        coco_ap: r.coco.as_ref().and_then(|c| c.ap),
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
    let (iw, ih) = (img.width(), img.height());
    if det.channels() == 1 {
        return det.detect_pixels(data::records::to_gray(img).as_raw(), iw as usize, ih as usize, min_score);
    }
    let [h, w] = det.image_size();
    if matches!(det.contract, Contract::Ours { .. }) || [ih as usize, iw as usize] == [h, w] {
        return det.detect_pixels(img.to_rgb8().as_raw(), iw as usize, ih as usize, min_score);
    }
    // a TFOD model: brought to its size first, its boxes (normalised) then scaled to the image's
    let small = data::image::imageops::resize(&img.to_rgb8(), w as u32, h as u32, data::image::imageops::FilterType::Triangle);
    let (sx, sy) = (iw as f32 / w as f32, ih as f32 / h as f32);
    Ok(det.detect_pixels(small.as_raw(), w, h, min_score)?.into_iter().map(|f| Found { bbox: scale_box(&f.bbox, sx, sy), ..f }).collect())
}

/// A box's corners as whole pixels of a `w` x `h` image, clamped to one pixel beyond its edges: a
/// wild coordinate (inf, 1e30) must not overflow the drawing arithmetic.
pub fn pixel_box(b: &models::detect::Bbox, w: i64, h: i64) -> [i64; 4] {
    [(b[0], w), (b[1], h), (b[2], w), (b[3], h)].map(|(v, n)| (v.round() as i64).clamp(-1, n + 1))
}

/// One colour per class (the book's `predict.py` draws each class in its own colour).
pub fn class_colour(class: usize) -> [u8; 3] {
    const PALETTE: [[u8; 3]; 8] = [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230]];
    PALETTE[class % PALETTE.len()]
}

/// Draws each detection's box (the class's colour) with its label and score on a tab above it, as
/// the book's `predict.py` does. The text is font8x8's public-domain 8x8 bitmap font (a crate, not
/// a font file to ship), scaled with the image.
pub fn draw(img: &mut data::image::RgbImage, found: &[Found]) {
    use font8x8::UnicodeFonts;
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let scale = (w.min(h) / 300).max(1);
    let thick = 2 * scale;
    let fill = |img: &mut data::image::RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: [u8; 3]| {
        for y in y0.max(0)..y1.min(h) {
            for x in x0.max(0)..x1.min(w) {
                img.put_pixel(x as u32, y as u32, data::image::Rgb(c));
            }
        }
    };
    for f in found {
        let colour = class_colour(f.class);
        let [x0, y0, x1, y1] = pixel_box(&f.bbox, w, h);
        fill(img, x0, y0, x1 + 1, y0 + thick, colour);
        fill(img, x0, y1 + 1 - thick, x1 + 1, y1 + 1, colour);
        fill(img, x0, y0, x0 + thick, y1 + 1, colour);
        fill(img, x1 + 1 - thick, y0, x1 + 1, y1 + 1, colour);
        let text = format!("{}: {:.2}", f.label, f.score);
        let glyph = 8 * scale;
        // the tab sits above the box, or inside it at the image's top edge
        let ty = if y0 - glyph - 2 * scale >= 0 { y0 - glyph - 2 * scale } else { y0 };
        let tw = text.chars().count() as i64 * glyph + 2 * scale;
        fill(img, x0, ty, x0 + tw, ty + glyph + 2 * scale, colour);
        // black text on light colours, white on dark ones
        let luma = 299 * u32::from(colour[0]) + 587 * u32::from(colour[1]) + 114 * u32::from(colour[2]);
        let ink = if luma > 128_000 { [0, 0, 0] } else { [255, 255, 255] };
        for (i, ch) in text.chars().enumerate() {
            let rows = font8x8::BASIC_FONTS.get(ch).unwrap_or([0; 8]);
            let gx = x0 + scale + i as i64 * glyph;
            for (r, bits) in rows.iter().enumerate() {
                for b in 0..8 {
                    if bits & (1 << b) != 0 {
                        let (px, py) = (gx + b * scale, ty + scale + r as i64 * scale);
                        fill(img, px, py, px + scale, py + scale, ink);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draw_outlines_the_box_and_writes_the_label_on_a_tab_above_it() {
        let mut img = data::image::RgbImage::new(320, 240);
        let f = Found { label: "car".into(), class: 1, score: 0.87, bbox: [40.0, 60.0, 200.0, 180.0] };
        draw(&mut img, std::slice::from_ref(&f));
        let colour = data::image::Rgb(class_colour(1));
        // the outline, two pixels thick, on all four sides; the inside untouched
        for (x, y) in [(40, 100), (41, 100), (200, 100), (199, 100), (120, 60), (120, 61), (120, 180), (120, 179)] {
            assert_eq!(*img.get_pixel(x, y), colour, "({x}, {y})");
        }
        assert_eq!(*img.get_pixel(42, 100), data::image::Rgb([0, 0, 0]));
        assert_eq!(*img.get_pixel(120, 120), data::image::Rgb([0, 0, 0]));
        // the tab: 10 rows above the box, as wide as "car: 0.87" (9 glyphs of 8 px and a margin),
        // in the class colour with the text in ink
        let tab: Vec<_> = (50..60).flat_map(|y| (40..40 + 9 * 8 + 2).map(move |x| (x, y))).map(|(x, y)| *img.get_pixel(x, y)).collect();
        let ink = tab.iter().filter(|&&p| p != colour).count();
        assert!(ink > 60 && ink < tab.len() / 2, "{ink} of {} tab pixels are text", tab.len());
        assert_eq!(*img.get_pixel(40 + 9 * 8 + 4, 55), data::image::Rgb([0, 0, 0]), "nothing beyond the tab");
        // a box at the top edge gets its tab inside
        let mut top = data::image::RgbImage::new(100, 100);
        draw(&mut top, &[Found { bbox: [10.0, 0.0, 90.0, 90.0], ..f }]);
        assert_eq!(*top.get_pixel(10, 5), colour);
    }
}

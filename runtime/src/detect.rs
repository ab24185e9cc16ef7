//! Detectors in ONNX Runtime, run by [`Detector`]: our exports (task `detection` in the metadata:
//! float32 `[N, C, H, W]` in, the TFOD contract out with boxes in input pixels), TFOD-contract models
//! made elsewhere, and face detectors in MediaPipe's BlazeFace contract (raw head out, decoded and
//! merged here by the shared geometry, keypoints kept). Evaluated on record files with boxes by
//! mAP@0.5 per class exactly as `trainer eval` measures it ([`evaluate`]: for ours the same loader
//! transform, the same [`MapEvaluator`]; the others at each image's own pixels), and run on images
//! ([`detect_image`]) with the boxes in each image's own pixels.

use std::path::{Path, PathBuf};
use std::time::Instant;

use data::records::RecordFile;
use data::{DetectTransform, Loader, LoaderOptions};
use models::detect::{scale_box, BlazeFace, Detection, Face, GroundTruth, Letterbox, MapEvaluator};
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
    /// A face detector in MediaPipe's BlazeFace contract (its TFLite model converted with tf2onnx):
    /// float32 `[1, S, S, 3]` RGB scaled to [-1, 1] in; `regressors [1, A, 16]` and `classificators
    /// [1, A, 1]` out, told apart by their last dimension. The layout is recognised from S and A
    /// ([`BlazeFace::for_model`]); images are letterboxed into S x S (centred, black).
    Face { spec: Box<BlazeFace>, anchors: Vec<[f32; 2]> },
}

/// A detector opened: one of our exports or a TFOD-contract model made elsewhere.
pub struct Detector {
    pub path: PathBuf,
    pub provider: Provider,
    session: Session,
    input_name: String,
    /// The outputs read, by name: the four TFOD ones (TF's exports end them in `:0`), or a face
    /// detector's regressors and scores.
    outputs: Vec<String>,
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

/// A BlazeFace-contract session's `[regressors, scores]` output names and its layout, if it is one:
/// one float input `[1, S, S, 3]`, two outputs `[1, A, 4 + 2K]` and `[1, A, 1]` whose A and S
/// name a known anchor layout.
fn face_outputs(session: &Session) -> Option<([String; 2], BlazeFace)> {
    let dims = |t: &ValueType| match t {
        ValueType::Tensor { ty, shape, .. } => (*ty == TensorElementType::Float32).then(|| shape.iter().copied().collect::<Vec<i64>>()),
        ValueType::Sequence(_) | ValueType::Map { .. } | ValueType::Optional(_) => None,
    };
    let [input] = session.inputs() else { return None };
    let i = dims(input.dtype())?;
    let [o1, o2] = session.outputs() else { return None };
    let (d1, d2) = (dims(o1.dtype())?, dims(o2.dtype())?);
    let ((reg, rd), (cls, _)) = if d2.last() == Some(&1) { ((o1, d1), (o2, d2)) } else { ((o2, d2), (o1, d1)) };
    let size = match i[..] {
        [_, h, w, 3] if h == w && h > 0 => h as usize,
        _ => return None,
    };
    let [_, a, v] = rd[..] else { return None };
    let spec = BlazeFace::for_model(size, usize::try_from(a).ok()?, usize::try_from(v).ok()?)?;
    Some(([reg.name().to_string(), cls.name().to_string()], spec))
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
        None => tfod_outputs(&session).is_some() || face_outputs(&session).is_some(),
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
        let face = if meta.is_none() { face_outputs(&session) } else { None };
        let outputs = match (&face, tfod_outputs(&session)) {
            (Some((names, _)), _) => names.to_vec(),
            (None, Some(names)) => names.to_vec(),
            (None, None) => {
                let have: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
                return Err(err(format!(
                    "has outputs {have:?}: neither the TFOD contract's {BOXES}, {SCORES}, {CLASSES} and {NUM} nor a BlazeFace detector's regressors [1, 896|2304, 16] and scores [1, A, 1]"
                ))
                .into());
            }
        };
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
            ("--size", (meta.is_some() || face.is_some()) && args.size.is_some()),
        ];
        if let Some((flag, _)) = ignored.iter().find(|(_, set)| *set) {
            let why = if meta.is_some() {
                "our exported detectors take their input size and normalisation from their metadata"
            } else if face.is_some() {
                "a BlazeFace detector's size and normalisation are its contract's (only --labels applies)"
            } else {
                "a TFOD-contract detector takes uint8 RGB as it is (only --size and --labels apply)"
            };
            return Err(err(format!("{flag}: {why}")).into());
        }
        let (contract, labels) = match (meta, face) {
            (None, Some((_, spec))) => {
                let labels = match from_file {
                    Some(names) if names.len() != 1 => {
                        return Err(err(format!("--labels names {} classes but a face detector has one", names.len())).into());
                    }
                    Some(names) => names,
                    None => vec!["face".to_string()],
                };
                let anchors = spec.anchors();
                (Contract::Face { spec: Box::new(spec), anchors }, std::iter::once("background".to_string()).chain(labels).collect())
            }
            (Some(meta), _) => {
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
            (None, None) => {
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
            Contract::Face { spec, .. } => [spec.size, spec.size],
        }
    }

    /// Bytes per pixel of the images [`Detector::detect_pixels`] takes: 1 (grey) or 3 (RGB).
    pub fn channels(&self) -> usize {
        match &self.contract {
            Contract::Ours { meta, .. } => meta.preprocessing.input[0],
            Contract::Tfod { .. } | Contract::Face { .. } => 3,
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

    /// One image's values for `runtime bench`: floats for ours and face detectors, bytes for a TFOD model.
    pub fn sample_len(&self) -> usize {
        let [h, w] = self.image_size();
        self.channels() * h * w
    }

    /// Runs `n` preprocessed images (ours: float32 `[N, C, H, W]`); each image's detections in input
    /// pixels, best first.
    pub fn run(&mut self, data: &[f32], n: usize) -> Result<Vec<Vec<Detection>>> {
        let err = |reason: String| RuntimeError::Model { path: self.path.clone(), reason };
        let Contract::Ours { meta, .. } = &self.contract else {
            return Err(err("is a model made elsewhere: it takes images (run_rgb8 for TFOD, run_faces for faces)".into()).into());
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
            return Err(err("is not a TFOD-contract model: it takes float32 (run, run_faces)".into()).into());
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
        let [ob, os, oc, on] = &self.outputs[..] else { unreachable!("TFOD detectors read four outputs") };
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

    /// Runs one face detector input (float32 `[1, S, S, 3]` in [-1, 1]); the faces in input pixels,
    /// best first, at `min_score` (and the detector's own threshold) and above.
    pub fn run_faces(&mut self, data: &[f32], min_score: f32) -> Result<Vec<Face>> {
        let err = |reason: String| RuntimeError::Model { path: self.path.clone(), reason };
        let Contract::Face { spec, anchors } = &self.contract else {
            return Err(err("is not a face detector in the BlazeFace contract".into()).into());
        };
        let s = spec.size;
        if data.len() != s * s * 3 {
            return Err(err(format!("{} floats for one RGB image of {s}x{s}", data.len())).into());
        }
        let tensor = TensorRef::from_array_view(([1, s, s, 3], data)).map_err(|e| err(e.to_string()))?;
        let outputs = self.session.run(ort::inputs![self.input_name.as_str() => tensor]).map_err(|e| err(format!("inference failed: {e}")))?;
        let get =
            |name: &str| -> Result<&[f32], RuntimeError> { Ok(outputs[name].try_extract_tensor::<f32>().map_err(|e| err(format!("output '{name}': {e}")))?.1) };
        let (reg, cls) = (get(&self.outputs[0])?, get(&self.outputs[1])?);
        spec.decode(anchors, reg, cls, min_score).map_err(|e| err(e.to_string()).into())
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
            Contract::Face { spec, .. } => {
                let s = spec.size;
                let (x, fit) = face_input(px, iw, ih, s);
                let faces = self.run_faces(&x, min_score)?;
                return Ok(faces.iter().map(|f| self.found_face(&f.map(|p| fit.to_image(p)))).collect());
            }
        };
        Ok(dets
            .into_iter()
            .filter(|d| d.score >= min_score)
            .map(|d| Found { label: self.label(d.class), class: d.class, score: d.score, bbox: d.bbox, keypoints: vec![] })
            .collect())
    }

    /// A face as a detection of class 1 with its keypoints.
    pub fn found_face(&self, f: &Face) -> Found {
        Found { label: self.label(1), class: 1, score: f.score, bbox: f.bbox, keypoints: f.keypoints.clone() }
    }
}

/// A face detector's input for an RGB image of `iw` x `ih` (packed): letterboxed into `s` x `s`
/// (a Triangle resize, centred, black around: -1 after scaling) and scaled to [-1, 1], NHWC; and the
/// letterbox, to map the faces back. An image already `s` x `s` is taken as it is.
pub fn face_input(px: &[u8], iw: usize, ih: usize, s: usize) -> (Vec<f32>, Letterbox) {
    let fit = Letterbox::fit(iw, ih, s, s);
    let mut x = vec![-1f32; s * s * 3];
    let scaled;
    let (src, [w, h]) = if fit.inner == [iw, ih] {
        (px, [iw, ih])
    } else {
        let img = data::image::RgbImage::from_raw(iw as u32, ih as u32, px.to_vec()).expect("the caller gives iw x ih x 3 bytes");
        scaled = data::image::imageops::resize(&img, fit.inner[0] as u32, fit.inner[1] as u32, data::image::imageops::FilterType::Triangle);
        (scaled.as_raw().as_slice(), fit.inner)
    };
    for y in 0..h {
        let row = &src[y * w * 3..(y + 1) * w * 3];
        let at = ((y + fit.offset[1]) * s + fit.offset[0]) * 3;
        for (o, &v) in x[at..at + w * 3].iter_mut().zip(row) {
            *o = f32::from(v) / 127.5 - 1.0;
        }
    }
    (x, fit)
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

/// The ground truth of a record file matched to a detector's classes, and the scores so far.
struct Scoring {
    data: PathBuf,
    /// The data's class names (labels.txt beside the records).
    names: Vec<String>,
    /// The detector's foreground class names (class k is `model[k - 1]`).
    model: Vec<String>,
    /// Data class k (0-based) → the detector's class (1-based).
    to_model: Vec<usize>,
    map: MapEvaluator,
    images: usize,
    skipped: Vec<(String, String)>,
}

impl Scoring {
    fn new(data: &Path, model: &[String]) -> Result<Self> {
        let derr = |reason: String| DetectError::Data { path: data.to_path_buf(), reason };
        let dir = data::folder::DatasetDir::of_records(data);
        let names =
            dir.labels().map_err(|e| derr(e.to_string()))?.ok_or_else(|| derr("no labels.txt beside it: a detection set names its classes there".into()))?;
        let to_model: Vec<usize> = models::detect::match_classes(&names, model)
            .map_err(|missing| DetectError::UnknownClasses { path: data.to_path_buf(), missing, model: model.to_vec() })?
            .into_iter()
            .map(|k| k + 1)
            .collect();
        Ok(Self { data: data.to_path_buf(), names, model: model.to_vec(), to_model, map: MapEvaluator::new(model.len(), 0.5), images: 0, skipped: vec![] })
    }

    /// One image: its boxes (data classes) against the detections (the detector's classes).
    fn add(&mut self, key: &str, truth: &[data::records::BoundingBox], dets: &[Detection]) -> Result<()> {
        let derr = |reason: String| DetectError::Data { path: self.data.clone(), reason };
        let mut gt = Vec::with_capacity(truth.len());
        for g in truth {
            let class = *self
                .to_model
                .get(g.class as usize)
                .ok_or_else(|| derr(format!("record '{key}': box class {} has no name in labels.txt ({} names)", g.class, self.names.len())))?;
            gt.push(GroundTruth { class, bbox: [g.x0, g.y0, g.x1, g.y1], difficult: false });
        }
        self.map.add_image(&gt, dets).map_err(|e| derr(e.to_string()))?;
        self.images += 1;
        Ok(())
    }

    fn report(self, model: String, provider: String, total: usize, seconds: f64) -> Result<DetectionReport> {
        if self.images == 0 {
            return Err(DetectError::Data { path: self.data, reason: format!("none of the {total} images could be used ({} skipped)", self.skipped.len()) });
        }
        let r = self.map.evaluate();
        let per_class = r.by_class(|k| self.model[k - 1].clone());
        Ok(DetectionReport {
            model,
            data: self.data.display().to_string(),
            provider,
            images: self.images,
            skipped: self.skipped,
            map: r.mean_ap,
            coco_ap: r.coco.as_ref().and_then(|c| c.ap),
            per_class,
            seconds,
            images_per_sec: self.images as f64 / seconds.max(1e-9),
        })
    }
}

/// mAP@0.5 of `det` on the record file `data` (boxes, `labels.txt` beside it), the data's classes
/// matched to the model's by name. Ours run on the loader's batches with the training transform;
/// models made elsewhere (TFOD, faces) on each decoded image at its own pixels, as `predict` runs them.
pub fn evaluate(det: &mut Detector, data: &Path, batch: usize, workers: usize, progress: bool) -> Result<DetectionReport> {
    let derr = |reason: String| DetectError::Data { path: data.to_path_buf(), reason };
    let file = RecordFile::open(data).map_err(|e| derr(e.to_string()))?;
    let mut scoring = Scoring::new(data, det.classes())?;
    let total = file.len();
    let t0 = Instant::now();
    if let Contract::Ours { transform, .. } = &det.contract {
        let loader = Loader::detection(file, transform.clone(), LoaderOptions { batch_size: batch.max(1), workers, ..LoaderOptions::default() });
        let bar = data::progress::bar(loader.batches_per_epoch() as u64, "eval", progress);
        for b in loader.epoch(0) {
            let b = b.map_err(|e| derr(e.to_string()))?;
            scoring.skipped.extend(b.skipped.iter().cloned());
            let found = det.run(&b.data, b.n)?;
            for ((key, truth), dets) in b.keys.iter().zip(&b.boxes).zip(&found) {
                scoring.add(key, truth, dets)?;
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
    } else {
        let bar = data::progress::bar(total as u64, "eval", progress);
        for i in 0..total {
            let r = file.read(i).map_err(|e| derr(e.to_string()))?;
            match data::image::load_from_memory(&r.image) {
                Ok(img) => {
                    let dets: Vec<Detection> =
                        detect_image(det, &img, 0.0)?.into_iter().map(|f| Detection { class: f.class, score: f.score, bbox: f.bbox }).collect();
                    scoring.add(&r.key, &r.boxes, &dets)?;
                }
                Err(e) => scoring.skipped.push((r.key.clone(), format!("cannot decode: {e}"))),
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    scoring.report(det.path.display().to_string(), det.provider.to_string(), total, t0.elapsed().as_secs_f64())
}

/// mAP@0.5 of detections made by any tool, given as JSON lines (`runtime predict --json`, `edge-demo
/// detect|faces --json`: `{"image": PATH, "detections": [{"label": NAME, "score": S, "box": [x0, y0,
/// x1, y1]}]}` in the image's pixels; lines without `detections`, such as edge-demo's summary, are
/// passed over), against the record file `data`. Each record is matched by file name: its key's, or
/// the `NNNNNN.ext` that `trainer dump` gives record N. Labels are matched to labels.txt by name;
/// every record must have a line (an image where nothing was found has an empty list).
pub fn evaluate_detections(detections: &Path, data: &Path) -> Result<DetectionReport> {
    let derr = |reason: String| DetectError::Data { path: data.to_path_buf(), reason };
    let jerr = |line: usize, reason: String| DetectError::Data { path: detections.to_path_buf(), reason: format!("line {line}: {reason}") };
    let t0 = Instant::now();
    let text = std::fs::read_to_string(detections).map_err(|e| DetectError::Data { path: detections.to_path_buf(), reason: e.to_string() })?;
    let file = RecordFile::open(data).map_err(|e| derr(e.to_string()))?;
    let names = data::folder::DatasetDir::of_records(data)
        .labels()
        .map_err(|e| derr(e.to_string()))?
        .ok_or_else(|| derr("no labels.txt beside it: a detection set names its classes there".into()))?;
    let mut scoring = Scoring::new(data, &names)?;
    let file_name = |p: &str| Path::new(p).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut by_name: std::collections::HashMap<String, (usize, Vec<Detection>)> = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| jerr(i + 1, format!("not JSON: {e}")))?;
        let Some(list) = v.get("detections") else { continue };
        let image = v.get("image").and_then(|s| s.as_str()).ok_or_else(|| jerr(i + 1, "no \"image\": each line names the image it is about".into()))?;
        let list = list.as_array().ok_or_else(|| jerr(i + 1, "\"detections\" is not a list".into()))?;
        let mut dets = Vec::with_capacity(list.len());
        for (j, d) in list.iter().enumerate() {
            let label = d.get("label").and_then(|l| l.as_str()).ok_or_else(|| jerr(i + 1, format!("detection {j} has no \"label\"")))?;
            let class = names
                .iter()
                .position(|n| n == label)
                .ok_or_else(|| jerr(i + 1, format!("detection {j}: label '{label}' is not among the data's {names:?}")))?
                + 1;
            let score = d.get("score").and_then(|s| s.as_f64()).ok_or_else(|| jerr(i + 1, format!("detection {j} has no numeric \"score\"")))? as f32;
            let b: Vec<f32> = d
                .get("box")
                .and_then(|b| b.as_array())
                .map(|b| b.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect())
                .filter(|b: &Vec<f32>| b.len() == 4)
                .ok_or_else(|| jerr(i + 1, format!("detection {j}: \"box\" is not four numbers [x0, y0, x1, y1]")))?;
            dets.push(Detection { class, score, bbox: [b[0], b[1], b[2], b[3]] });
        }
        if let Some((first, _)) = by_name.insert(file_name(image), (i + 1, dets)) {
            return Err(jerr(i + 1, format!("image '{}' again (first on line {first})", file_name(image))));
        }
    }
    let bar = data::progress::bar(file.len() as u64, "eval", false);
    for n in 0..file.len() {
        let r = file.read(n).map_err(|e| derr(e.to_string()))?;
        let ext = if r.image.starts_with(&[0x89, b'P', b'N', b'G']) { "png" } else { "jpg" };
        let dets = by_name
            .remove(&file_name(&r.key))
            .or_else(|| by_name.remove(&format!("{n:06}.{ext}")))
            .ok_or_else(|| derr(format!("record {n} ('{}') has no line in {} (matched by file name)", r.key, detections.display())))?;
        scoring.add(&r.key, &r.boxes, &dets.1)?;
        bar.inc(1);
    }
    if let Some((name, (line, _))) = by_name.iter().min_by_key(|(_, (l, _))| *l) {
        return Err(jerr(*line, format!("image '{name}' is not in {} ({} such lines)", data.display(), by_name.len())));
    }
    scoring.report(detections.display().to_string(), "-".into(), file.len(), t0.elapsed().as_secs_f64())
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
    /// Face detectors: the keypoints `(x, y)` in the same pixels, in the model's order (BlazeFace:
    /// the subject's right eye, left eye, nose tip, mouth, right ear, left ear); empty for others.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub keypoints: Vec<[f32; 2]>,
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
    if matches!(det.contract, Contract::Ours { .. } | Contract::Face { .. }) || [ih as usize, iw as usize] == [h, w] {
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
        let f = Found { label: "car".into(), class: 1, score: 0.87, bbox: [40.0, 60.0, 200.0, 180.0], keypoints: vec![] };
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

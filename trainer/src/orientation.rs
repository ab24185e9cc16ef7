//! `trainer orientation-correct`: the book's `orient_images.py` (ch. 11) over a folder.
//!
//! Every image (searched recursively) goes through exactly the steps its training features went
//! through: packed as `trainer prepare` packs (shorter side resized, stored as PNG or JPEG), decoded
//! and centre-cropped by the loader, normalised with the run's mean and std, and read at the same layer
//! of the same network; the logistic model then predicts the angle. Label "90" means the image was
//! turned 90° clockwise (`trainer prepare orientation`, `Source::FileRotated`), so the original file is
//! turned a further 360 - 90 = 270° clockwise, which makes it upright, and written under the same
//! relative path in the output folder. Files that are not images or do not decode are skipped, listed
//! and counted. `report.json` in the output folder lists every image with its angle and probability.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use data::image::{self, DynamicImage};
use data::records::{pack, Item, PackOptions, RecordError, Source};
use serde::Serialize;

use crate::device::DeviceSpec;
use crate::features::{Extractor, FeatureSet, FeaturesError};
use crate::logreg::{argmax, Model};
use data::files::{is_image, rel, walk};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why `trainer orientation-correct` stopped; each names the model, run, flag or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum OrientationError {
    #[error("{path}: {source}")]
    Model { path: PathBuf, source: BoxError },
    #[error("{model}: class '{label}' is not an angle of 0, 90, 180 or 270")]
    NotAnAngle { model: String, label: String },
    #[error("--run is needed: {model} does not say which run its features came from")]
    NoRun { model: PathBuf },
    #[error("{run} layer {layer} gives {got} features, the model {model} expects {want}")]
    Dimension { run: PathBuf, layer: String, got: usize, model: PathBuf, want: usize },
    #[error(transparent)]
    Features(#[from] FeaturesError),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: PathBuf, source: image::ImageError },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OrientationError + '_ {
    move |source| OrientationError::Io { path: path.to_path_buf(), source }
}

/// `trainer orientation-correct` (its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct CorrectOptions {
    /// The run whose network gives the features (default: the run the model's features came from).
    #[arg(long)]
    pub run: Option<PathBuf>,
    /// The checkpoint (default: the model's, when --run is its run; else the latest).
    #[arg(long)]
    pub epoch: Option<usize>,
    /// A model from `trainer logreg fit` whose classes are angles (0, 90, 180, 270).
    #[arg(long)]
    pub model: PathBuf,
    /// A folder of images (searched recursively).
    #[arg(long)]
    pub images: PathBuf,
    /// Where the upright images and report.json go (same relative paths as in --images).
    #[arg(long)]
    pub out: PathBuf,
    /// Resize as `trainer prepare --short-side` did (default: as recorded with the model's features).
    #[arg(long)]
    pub short_side: Option<u32>,
    /// Store as `trainer prepare --quality` did (default: 0 if the training records were PNG, else 95).
    #[arg(long)]
    pub quality: Option<u8>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
}

/// One corrected image.
#[derive(Debug, Clone, Serialize)]
pub struct Corrected {
    /// The path relative to the input folder (and to the output folder).
    pub image: String,
    /// The predicted clockwise rotation of the input.
    pub angle: u32,
    pub probability: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CorrectReport {
    pub images: Vec<Corrected>,
    /// (image, reason) of every file not corrected.
    pub skipped: Vec<(String, String)>,
    /// Images predicted to be rotated (angle above 0) and turned back.
    pub turned: usize,
    pub out: PathBuf,
}

impl fmt::Display for CorrectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.images {
            writeln!(f, "{}\t{}\t{:.4}", c.image, c.angle, c.probability)?;
        }
        for (image, why) in &self.skipped {
            writeln!(f, "skipped {image}: {}", why.trim())?;
        }
        write!(
            f,
            "{} images written to {} ({} turned back by the predicted angle, {} predicted upright), {} skipped",
            self.images.len(),
            self.out.display(),
            self.turned,
            self.images.len() - self.turned,
            self.skipped.len()
        )
    }
}

/// The angle every model class stands for ("0", "90", "180", "270").
fn class_angles(m: &Model, path: &Path) -> Result<Vec<u32>, OrientationError> {
    m.labels
        .iter()
        .map(|l| data::rotation::angle_of(l).ok_or_else(|| OrientationError::NotAnAngle { model: path.display().to_string(), label: l.clone() }))
        .collect()
}

/// Undoes a clockwise turn by `angle`: a further turn by 360 - angle.
pub fn upright(img: DynamicImage, angle: u32) -> DynamicImage {
    match angle {
        90 => img.rotate270(),
        180 => img.rotate180(),
        270 => img.rotate90(),
        _ => img,
    }
}

fn save(img: &DynamicImage, path: &Path) -> Result<(), OrientationError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let jpeg = path.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg"));
    let written = if jpeg {
        let file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io(path))?);
        DynamicImage::ImageRgb8(img.to_rgb8()).write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(file, 95))
    } else {
        img.save(path)
    };
    written.map_err(|source| OrientationError::Write { path: path.to_path_buf(), source })
}

/// `trainer orientation-correct`.
pub fn correct(o: &CorrectOptions) -> Result<CorrectReport, OrientationError> {
    let model_error = |e: BoxError| OrientationError::Model { path: o.model.clone(), source: e };
    let model = Model::load(&o.model).map_err(|e| model_error(e.into()))?;
    let angles = class_angles(&model, &o.model)?;
    let trained = model.features.as_ref();
    let run = o.run.clone().or_else(|| trained.map(|f| f.run.clone())).ok_or_else(|| OrientationError::NoRun { model: o.model.clone() })?;
    // the epoch the features came from, when it is the same run
    let epoch = o.epoch.or_else(|| trained.filter(|f| f.run == run).map(|f| f.epoch));
    let ex = Extractor::open(&run, epoch, trained.map(|f| f.layer.as_str()), o.device)?;
    if ex.info().dim() != model.dim() {
        return Err(OrientationError::Dimension { run, layer: ex.info().layer.clone(), got: ex.info().dim(), model: o.model.clone(), want: model.dim() });
    }
    let short_side = match o.short_side.or_else(|| trained.and_then(|f| f.short_side)) {
        Some(s) => s,
        None => {
            tracing::warn!("the model does not record how its images were resized; using --short-side 256 (trainer prepare's default)");
            256
        }
    };
    let quality = o.quality.unwrap_or_else(|| if trained.and_then(|f| f.stored_as.as_deref()) == Some("png") { 0 } else { 95 });

    let mut files = vec![];
    walk(&o.images, &mut files).map_err(io(&o.images))?;
    let mut skipped = vec![];
    let mut items = vec![];
    for f in files.into_iter().filter(|f| !f.starts_with(&o.out)) {
        let key = rel(&o.images, &f);
        if is_image(&f) {
            items.push(Item { source: Source::File(f), key, label: -1, boxes: vec![] });
        } else {
            skipped.push((key, "not an image file extension".to_string()));
        }
    }
    let sources: BTreeMap<String, PathBuf> =
        items.iter().filter_map(|i| if let Source::File(p) = &i.source { Some((i.key.clone(), p.clone())) } else { None }).collect();

    // the same packing as `trainer prepare`, into a scratch record file
    let scratch = o.out.join(".orientation-input");
    std::fs::create_dir_all(&scratch).map_err(io(&scratch))?;
    let rec = scratch.join("images.rec");
    let packed = pack(&items, &rec, &PackOptions { short_side, jpeg_quality: quality, grayscale: false }, true)?;
    skipped.extend(packed.skipped);
    let (mut data, mut keys) = (vec![], vec![]);
    let done = ex.extract(&rec, o.batch, true, |rows, _, k| {
        data.extend_from_slice(rows);
        keys.extend(k.iter().cloned());
        Ok::<(), std::convert::Infallible>(())
    })?;
    std::fs::remove_dir_all(&scratch).map_err(io(&scratch))?;
    skipped.extend(done.skipped);
    let set =
        FeatureSet { n: keys.len(), dim: model.dim(), labels: vec![-1; keys.len()], data, keys, label_names: model.labels.clone(), info: Some(done.info) };

    let mut images = vec![];
    for (key, p) in set.keys.iter().zip(model.predict_proba(&set).map_err(|e| model_error(e.into()))?) {
        let best = argmax(&p);
        let angle = angles[best];
        let source = &sources[key];
        match image::open(source) {
            Ok(img) => {
                save(&upright(img, angle), &o.out.join(key))?;
                images.push(Corrected { image: key.clone(), angle, probability: p[best] });
            }
            Err(e) => skipped.push((key.clone(), format!("{}: {e}", source.display()))),
        }
    }
    let turned = images.iter().filter(|c| c.angle != 0).count();
    let report = CorrectReport { images, skipped, turned, out: o.out.clone() };
    let path = o.out.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("the report is plain data")).map_err(io(&path))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use data::image::{Rgb, RgbImage};

    #[test]
    fn upright_undoes_the_turns_of_prepare_orientation() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(5, 3, |x, y| Rgb([x as u8, y as u8, 7])));
        // prepare orientation turns the source clockwise by the label's angle (Source::FileRotated)
        for (angle, turned) in [(0, img.clone()), (90, img.rotate90()), (180, img.rotate180()), (270, img.rotate270())] {
            assert_eq!(upright(turned, angle), img, "angle {angle}");
        }
        let m = |labels: &[&str]| Model {
            format: crate::logreg::FORMAT.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            c: 1.0,
            standardize: None,
            weights: vec![],
            bias: vec![],
            train_samples: 0,
            cv: vec![],
            folds: 0,
            features: None,
        };
        let path = Path::new("angles.json");
        assert_eq!(class_angles(&m(&["0", "90", "180", "270"]), path).unwrap(), [0, 90, 180, 270]);
        let err = class_angles(&m(&["0", "cat"]), path).unwrap_err().to_string();
        assert!(err.contains("'cat'") && err.contains("angles.json"), "{err}");
        assert!(class_angles(&m(&["45"]), path).is_err());
    }
}

//! The clap arguments of the larger `trainer` subcommands and what they print (a module of the binary:
//! the library returns values, this prints them).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use models::describe::describe;
use models::zoo::{self, REGISTRY};

/// `trainer models [--json]`.
pub fn list_models(json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(REGISTRY)?);
        return Ok(());
    }
    println!("{:<16}  {:<14}  {:<12}  {:>7}  description", "name", "task", "input", "classes");
    for m in REGISTRY {
        let [c, h, w] = m.input;
        println!("{:<16}  {:<14}  {:<12}  {:>7}  {}", m.name, m.task.as_str(), format!("{c}x{h}x{w}"), m.default_classes, m.summary);
    }
    Ok(())
}

/// `trainer models describe NAME [--num-classes K] [--in-channels C] [--json]`.
pub fn describe_model(name: &str, num_classes: Option<usize>, in_channels: Option<usize>, json: bool) -> Result<()> {
    let g = zoo::build(name, num_classes, in_channels)?;
    let d = describe(&g);
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        println!("{d}");
    }
    Ok(())
}

/// Options every `trainer prepare` kind shares.
#[derive(Args, Debug, Clone)]
pub struct PrepareCommon {
    /// Output folder for the lists, label map, means, records and report.
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
    /// Resize so the shorter side is this long (0 keeps the size; images are never upscaled).
    #[arg(long, default_value_t = 256, global = true)]
    pub short_side: u32,
    /// JPEG quality of the stored images; 0 stores lossless PNG.
    #[arg(long, default_value_t = 95, global = true)]
    pub quality: u8,
    /// Seed of the splits.
    #[arg(long, default_value_t = 42, global = true)]
    pub seed: u64,
}

#[derive(Subcommand, Debug, Clone)]
pub enum PrepareKind {
    /// MNIST-format IDX files (e.g. Debian's Fashion-MNIST): --train PREFIX [--test PREFIX].
    Idx {
        /// Prefix of the train files: PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz].
        #[arg(long)]
        train: PathBuf,
        #[arg(long)]
        test: Option<PathBuf>,
        /// A file with one class name per line.
        #[arg(long)]
        labels: Option<PathBuf>,
        #[arg(long, default_value_t = 0.0)]
        val_fraction: f64,
    },
    /// One sub-folder per class: ROOT/<class>/<images>.
    Folder {
        root: PathBuf,
        #[arg(long, default_value_t = 0.1)]
        val_fraction: f64,
        #[arg(long, default_value_t = 0.1)]
        test_fraction: f64,
    },
    /// The Kaggle FER2013 CSV (emotion, pixels, Usage).
    Fer2013 {
        csv: PathBuf,
        /// The book's 6 classes: disgust merged into angry.
        #[arg(long)]
        merge_disgust: bool,
    },
    /// ILSVRC2015 CLS-LOC tree + devkit: train/val/test with a stratified test split carved from train.
    Imagenet {
        /// The folder holding Data/, ImageSets/ and devkit/.
        root: PathBuf,
        /// Images per class moved from train to test (the book: 50).
        #[arg(long, default_value_t = 50)]
        test_per_class: usize,
    },
    /// Stanford Cars with the book's complete_dataset.csv: make:model labels, stratified 70/15/15.
    Cars {
        /// The folder holding car_ims/ (and complete_dataset.csv).
        root: PathBuf,
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Adience fold files → age bins or gender; invalid rows dropped and counted.
    Adience {
        /// The folder holding aligned/ (and folds/ or the fold_*_data.txt files).
        root: PathBuf,
        /// age or gender.
        #[arg(long, value_parser = ["age", "gender"])]
        task: String,
        /// Folder with the fold_*_data.txt files (default: ROOT/folds or ROOT).
        #[arg(long)]
        folds: Option<PathBuf>,
    },
    /// LISA traffic signs (allAnnotations.csv): boxes per image, class filter, image-level split.
    Lisa {
        /// The folder holding allAnnotations.csv and the vid*/ frames.
        root: PathBuf,
        /// Classes to keep (default: the book's stop, pedestrianCrossing, signalAhead); "all" keeps every class.
        #[arg(long, value_delimiter = ',')]
        classes: Vec<String>,
        #[arg(long, default_value_t = 0.25)]
        test_fraction: f64,
    },
    /// dlib imglab XML (e.g. dlib's front-and-rear vehicles): boxes clipped, ignored boxes dropped.
    DlibXml {
        /// training.xml
        train_xml: PathBuf,
        /// testing.xml
        #[arg(long)]
        test_xml: Option<PathBuf>,
        /// The class name of the boxes when the XML labels none [default: object] (e.g. face for
        /// dlib's faces, to evaluate face detectors on them by name).
        #[arg(long)]
        label: Option<String>,
    },
    /// Detection scenes of real Fashion-MNIST items on noisy canvases, boxes exact by construction
    /// (train scenes from the train files, test scenes from the test files).
    FashionDetect {
        /// Prefix of the Fashion-MNIST train files.
        #[arg(long, default_value = "/usr/share/datasets/fashion-mnist/train")]
        train: PathBuf,
        /// Prefix of the test files ("none": test scenes from train items too).
        #[arg(long, default_value = "/usr/share/datasets/fashion-mnist/t10k")]
        test: String,
        /// Fashion-MNIST classes to place, in label order.
        #[arg(long, value_delimiter = ',', default_value = "T-shirt/top,Trouser,Sneaker,Bag")]
        classes: Vec<String>,
        /// Canvas side in pixels.
        #[arg(long, default_value_t = 128)]
        canvas: u32,
        #[arg(long, default_value_t = 3000)]
        train_images: usize,
        #[arg(long, default_value_t = 500)]
        test_images: usize,
        /// Items per scene: 1 to this many.
        #[arg(long, default_value_t = 3)]
        max_objects: usize,
        /// Smallest and largest side of a placed item (the 28-px items are scaled).
        #[arg(long, default_value_t = 24)]
        min_side: u32,
        #[arg(long, default_value_t = 64)]
        max_side: u32,
    },
    /// Any image folder → copies rotated by 0/90/180/270 degrees, labelled by the angle.
    Orientation {
        root: PathBuf,
        /// Sample at most N images (0 = all).
        #[arg(long, default_value_t = 0)]
        limit: usize,
        /// Write all four rotations of each image instead of one random one.
        #[arg(long)]
        all_angles: bool,
        #[arg(long, default_value_t = 0.1)]
        val_fraction: f64,
        #[arg(long, default_value_t = 0.1)]
        test_fraction: f64,
    },
}

fn lines(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// `trainer prepare KIND ...`.
pub fn prepare(kind: PrepareKind, c: &PrepareCommon) -> Result<()> {
    use data::prepare::{adience, cars, detection, idx, imagenet, simple};
    let out = c.out.clone().ok_or_else(|| anyhow::anyhow!("--out DIR is required"))?;
    let prepared = match kind {
        PrepareKind::Idx { train, test, labels, val_fraction } => {
            idx::build(&idx::IdxOptions { train, test, labels: labels.as_deref().map(lines).transpose()?, val_fraction, seed: c.seed })?
        }
        PrepareKind::Folder { root, val_fraction, test_fraction } => {
            simple::build_folder(&simple::FolderOptions { root, val_fraction, test_fraction, seed: c.seed })?
        }
        PrepareKind::Fer2013 { csv, merge_disgust } => simple::build_fer2013(&simple::Fer2013Options { csv, merge_disgust })?,
        PrepareKind::Imagenet { root, test_per_class } => imagenet::build(&imagenet::ImagenetOptions { root, test_per_class, seed: c.seed })?,
        PrepareKind::Cars { root, csv } => cars::build(&cars::CarsOptions { root, csv, seed: c.seed })?,
        PrepareKind::Adience { root, task, folds } => {
            let task = if task == "age" { adience::AdienceTask::Age } else { adience::AdienceTask::Gender };
            adience::build(&adience::AdienceOptions { root, folds, task, seed: c.seed })?
        }
        PrepareKind::Lisa { root, classes, test_fraction } => {
            let mut o = detection::LisaOptions::book(root);
            if classes.iter().any(|c| c == "all") {
                o.classes.clear();
            } else if !classes.is_empty() {
                o.classes = classes;
            }
            o.test_fraction = test_fraction;
            o.seed = c.seed;
            detection::build_lisa(&o)?
        }
        PrepareKind::DlibXml { train_xml, test_xml, label } => {
            detection::build_dlib_xml(&detection::DlibXmlOptions { train_xml, test_xml, unlabelled: label })?
        }
        PrepareKind::FashionDetect { train, test, classes, canvas, train_images, test_images, max_objects, min_side, max_side } => {
            let test = (test != "none").then(|| PathBuf::from(test));
            let o = detection::CompositeOptions {
                classes,
                canvas,
                train_images,
                test_images,
                max_objects,
                min_side,
                max_side,
                seed: c.seed,
                ..detection::CompositeOptions::new(train, test)
            };
            detection::build_composites(&o)?
        }
        PrepareKind::Orientation { root, limit, all_angles, val_fraction, test_fraction } => {
            simple::build_orientation(&simple::OrientationOptions { root, limit, all_angles, val_fraction, test_fraction, seed: c.seed })?
        }
    };
    let opts = data::records::PackOptions { short_side: c.short_side, jpeg_quality: c.quality, grayscale: false };
    let report = data::prepare::write(prepared, &out, &opts, true)?;
    println!("{report}");
    println!("wrote {}", out.join("report.json").display());
    Ok(())
}

/// The augmentation `trainer loader-bench` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchAugment {
    /// Random crop, flip, rotation within 15 degrees and shear 0.1 (the book's ImageNet recipe).
    Book,
    /// Random crop and flip only.
    CropFlip,
    /// Centre crops.
    None,
}

/// `trainer loader-bench`: how fast the data loader decodes and augments a record file here.
pub fn loader_bench(rec: &std::path::Path, size: u32, batch: usize, workers: usize, augment: BenchAugment) -> Result<serde_json::Value> {
    use data::{Loader, LoaderOptions, Transform};
    let file = data::records::RecordFile::open(rec)?;
    let (random, book) = (augment != BenchAugment::None, augment == BenchAugment::Book);
    let t = Transform {
        size: [size, size],
        channels: 3,
        random_crop: random,
        flip: random,
        rotate: if book { 15.0 } else { 0.0 },
        shear: if book { 0.1 } else { 0.0 },
        mean: vec![123.68, 116.78, 103.94],
        std: vec![58.4, 57.1, 57.4],
    };
    let loader = Loader::new(file, t, LoaderOptions { batch_size: batch, shuffle: true, seed: 0, workers, ..LoaderOptions::default() });
    let status_mb = |key: &str| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
            .map(|kb| kb / 1024.0)
    };
    let rss_before_mb = status_mb("VmRSS:");
    let t0 = std::time::Instant::now();
    let mut images = 0;
    for b in loader.epoch(0) {
        let b = b?;
        images += b.n;
        // a consumer done with a batch hands its buffer back (as the trainer does after its copy)
        loader.recycle(b.data);
    }
    let secs = t0.elapsed().as_secs_f64();
    // The process holds libtorch before any data is read; the loader's own share is the difference.
    Ok(serde_json::json!({
        "images": images, "seconds": secs, "images_per_sec": images as f64 / secs, "workers": workers,
        "rss_before_mb": rss_before_mb, "peak_rss_mb": status_mb("VmHWM:"),
    }))
}

/// `trainer features`.
#[derive(Args, Debug, Clone)]
pub struct FeaturesArgs {
    /// The run whose network is read (e.g. from `trainer init`, `trainer train` or imported weights).
    #[arg(long)]
    pub run: PathBuf,
    /// The checkpoint (default: the latest).
    #[arg(long)]
    pub epoch: Option<usize>,
    /// A record file from `trainer prepare`.
    #[arg(long)]
    pub data: PathBuf,
    /// The features file to write (safetensors; see docs/case-orientation.md).
    #[arg(long)]
    pub out: PathBuf,
    /// The graph node to read (default: the last pooling layer; names in `trainer models describe`).
    #[arg(long)]
    pub layer: Option<String>,
    /// Records per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: trainer::device::DeviceSpec,
}

/// `trainer features --run DIR --data FILE.rec --out FEATURES`.
pub fn features(a: &FeaturesArgs) -> Result<()> {
    let ex = trainer::features::Extractor::open(&a.run, a.epoch, a.layer.as_deref(), a.device)?;
    let done = trainer::features::extract_to_file(&ex, &a.data, &a.out, a.batch)?;
    let i = &done.info;
    println!(
        "{}: {} rows x {} features ({} {} {:?}, {} epoch {}), {} classes, {} records skipped",
        a.out.display(),
        done.samples,
        i.dim(),
        i.model,
        i.layer,
        i.layer_shape,
        i.run.display(),
        i.epoch,
        done.label_names.len(),
        done.skipped.len()
    );
    Ok(())
}

#[derive(Subcommand, Debug, Clone)]
pub enum LogregAction {
    /// Grid search over C with stratified k-fold cross-validation, refit with the best C, report, save.
    Fit {
        /// Training features (`trainer features`).
        #[arg(long)]
        features: PathBuf,
        /// Held-out features to report on (default: the out-of-fold predictions on the training rows).
        #[arg(long, alias = "test")]
        val: Option<PathBuf>,
        /// The grid of C (inverse regularisation strength, as scikit-learn's), comma-separated.
        #[arg(long = "c", value_delimiter = ',', default_values_t = trainer::logreg::BOOK_GRID)]
        cs: Vec<f64>,
        #[arg(long, default_value_t = 3)]
        folds: usize,
        /// Fit on the raw features instead of standardised ones.
        #[arg(long)]
        no_standardize: bool,
        /// L-BFGS iterations per fit.
        #[arg(long, default_value_t = 100)]
        max_iter: u64,
        /// Seed of the fold assignment.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Folds fitted at once (0: one per core).
        #[arg(long, default_value_t = 0)]
        jobs: usize,
        /// The model file to write (JSON).
        #[arg(long)]
        out: PathBuf,
        /// Print the grid, the choice and the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reload a saved model and report it on labelled features.
    Eval {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        features: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// `trainer logreg fit | eval`.
pub fn logreg(action: LogregAction) -> Result<()> {
    use trainer::features::FeatureSet;
    use trainer::logreg::{fit, FitOptions, Model, Report};
    match action {
        LogregAction::Fit { features, val, cs, folds, no_standardize, max_iter, seed, jobs, out, json } => {
            let train = FeatureSet::load(&features)?;
            let o = FitOptions { cs, folds, standardize: !no_standardize, max_iter, seed, jobs, ..FitOptions::default() };
            let fitted = fit(&train, &o).with_context(|| format!("fitting {}", features.display()))?;
            fitted.model.save(&out)?;
            // report on the model as saved (see trainer::logreg), so `logreg eval` of it agrees exactly
            let m = &Model::load(&out)?;
            let (report, on) = match &val {
                Some(v) => (m.report(&FeatureSet::load(v)?).with_context(|| v.display().to_string())?, v.display().to_string()),
                None => (Report::new(&fitted.truth, &fitted.out_of_fold, &m.labels), format!("{} (out-of-fold predictions)", features.display())),
            };
            if json {
                println!("{}", serde_json::json!({"cv": m.cv, "c": m.c, "folds": folds, "model": out, "report_on": on, "report": report}));
                return Ok(());
            }
            let scaled = if o.standardize { "standardised" } else { "raw" };
            println!(
                "{}: {} rows x {} features ({scaled}), {} classes; {folds}-fold CV over {} values of C",
                features.display(),
                train.n,
                train.dim,
                m.labels.len(),
                m.cv.len()
            );
            println!("{:>10}  {:>9}  {:>7}  folds", "C", "accuracy", "std");
            for s in &m.cv {
                let f: Vec<String> = s.folds.iter().map(|v| format!("{v:.4}")).collect();
                println!("{:>10}  {:>9.4}  {:>7.4}  {}", s.c, s.mean, s.std, f.join(" "));
            }
            let best = m.cv.iter().find(|s| s.c == m.c).map_or(0.0, |s| s.mean);
            println!("best C: {} (mean CV accuracy {best:.4}); refitted on all {} rows; saved {}", m.c, m.train_samples, out.display());
            println!("report on {on}:\n{report}");
        }
        LogregAction::Eval { model, features, json } => {
            let m = Model::load(&model)?;
            let report = m.report(&FeatureSet::load(&features)?).with_context(|| format!("{} on {}", model.display(), features.display()))?;
            if json {
                println!("{}", serde_json::json!({"model": model, "c": m.c, "report_on": features, "report": report}));
            } else {
                println!("{} (C={}) on {}:\n{report}", model.display(), m.c, features.display());
            }
        }
    }
    Ok(())
}

/// `trainer orientation-correct`.
pub fn orientation_correct(o: &trainer::orientation::CorrectOptions) -> Result<()> {
    println!("{}", trainer::orientation::correct(o)?);
    Ok(())
}

//! `edge-demo`: thin command-line front over the `edge-demo` library.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use edge_demo::app::{self, Outputs};
use edge_demo::pipeline::{Kind, Pipeline};
use edge_demo::source::SourceSpec;
use edge_demo::vision::FaceDetector;
use models::cli::Verbosity;
use runtime::detect::Detector;
use runtime::{Model, PreprocessArgs, Provider, SessionOptions};

/// Real-time video inference: object detection, faces (Haar or BlazeFace) with emotion and age/gender, orientation and classification on
/// video files, cameras, streams and image folders.
///
/// Our exported models carry their preprocessing and labels; for a model made elsewhere give them with
/// the runtime's flags, e.g. the FER2013 model in edge-demo/assets:
///   edge-demo emotion --model fer_emotion.onnx --size 64x64 --layout nhwc --gray --mean 127.5 --std 127.5
///     --labels fer_labels.txt --source faces.mp4 --output out.mp4 --json frames.jsonl
#[derive(Parser, Debug)]
#[command(name = "edge-demo", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    verbosity: Verbosity,
    #[command(subcommand)]
    command: Command,
}

/// Source, outputs and the model's execution.
#[derive(Args, Debug)]
struct Common {
    /// A video file, a camera index (0), an rtsp:// or http:// URL, or a folder of images.
    #[arg(long, short = 's')]
    source: String,
    /// Annotated video (codec from the extension: .mp4/.mov mp4v, .avi MJPG, .mkv XVID), or a folder
    /// for image-folder sources.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// JSON lines: one object per frame (index, timestamp, results), then a summary line.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Show the annotated frames in a window (when a display exists; q quits).
    #[arg(long)]
    show: bool,
    /// Stop after this many frames (live sources run until Ctrl-C otherwise).
    #[arg(long)]
    max_frames: Option<usize>,
    /// Execution provider: cpu, cuda or cuda:N (no silent fallback).
    #[arg(long, default_value = "cpu")]
    provider: Provider,
    /// ONNX Runtime intra-op threads [default: every core].
    #[arg(long)]
    threads: Option<usize>,
    /// Frames processed at once, each by its own copy of the pipeline (outputs stay in frame order)
    /// [default: the cores for files and folders, 1 for cameras and streams].
    #[arg(long)]
    workers: Option<usize>,
    /// The book's 10-crop oversampling for each classification.
    #[arg(long)]
    ten_crop: bool,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

/// The face detector.
#[derive(Args, Debug)]
struct FaceArgs {
    /// Which face detector: haar (the book's OpenCV cascade, --cascade), blazeface (MediaPipe's
    /// short-range BlazeFace, 128 px, faces within ~2 m: webcams, portraits; gives eye keypoints),
    /// blazeface-full (its 192 px full-range sibling, faces up to ~5 m), or an ONNX file in the
    /// BlazeFace contract. The ONNX ones run through ONNX Runtime on --provider.
    #[arg(long, default_value = "haar")]
    face_detector: String,
    /// ONNX face detectors: the lowest face score kept.
    #[arg(long, default_value_t = 0.5)]
    face_threshold: f32,
    /// ONNX face detectors: faces overlapping a better one by more than this IoU are merged into it
    /// (MediaPipe's weighted NMS).
    #[arg(long, default_value_t = 0.3)]
    face_nms: f32,
    /// Haar cascade for faces.
    #[arg(long, default_value = edge_demo::DEFAULT_FACE_CASCADE)]
    cascade: PathBuf,
    /// Haar: detect on a copy of the frame downscaled to this width (the book uses 300; 0: full size).
    #[arg(long, default_value_t = 300)]
    detect_width: i32,
}

impl FaceArgs {
    /// The ONNX file `--face-detector` names, or `None` for the Haar cascade.
    fn onnx_file(&self) -> Result<Option<PathBuf>, edge_demo::DemoError> {
        let named = match self.face_detector.as_str() {
            "haar" => return Ok(None),
            "blazeface" => edge_demo::BLAZEFACE_SHORT,
            "blazeface-full" => edge_demo::BLAZEFACE_FULL,
            file => {
                let p = PathBuf::from(file);
                return if p.is_file() { Ok(Some(p)) } else { Err(edge_demo::DemoError::NoFaceModel(p)) };
            }
        };
        edge_demo::asset(named).map(Some).ok_or_else(|| edge_demo::DemoError::NoFaceModel(PathBuf::from("edge-demo/assets").join(named)))
    }

    fn open(&self, c: &Common, threads: Option<usize>, eyes: Option<&std::path::Path>) -> Result<FaceDetector, edge_demo::DemoError> {
        match self.onnx_file()? {
            None => FaceDetector::new(&self.cascade, eyes, self.detect_width),
            Some(file) => {
                let det = Detector::open(&file, &SessionOptions { provider: c.provider, threads, share_cores: true }, &runtime::PreprocessArgs::default())?;
                FaceDetector::onnx(det, self.face_threshold, self.face_nms)
            }
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Classify the whole frame: the top label(s) and probabilities drawn.
    Classify {
        /// The ONNX classifier.
        #[arg(long, short = 'm')]
        model: PathBuf,
        /// How many labels to draw, best first (5: the book's top-5 visualisation).
        #[arg(long, default_value_t = 1)]
        top: usize,
        #[command(flatten)]
        common: Common,
    },
    /// The book's real-time emotion detector: the largest face classified, a probability panel beside.
    Emotion {
        /// The ONNX emotion classifier (input: a face crop).
        #[arg(long, short = 'm')]
        model: PathBuf,
        #[command(flatten)]
        faces: FaceArgs,
        /// Width of the probability panel, in pixels.
        #[arg(long, default_value_t = 260)]
        panel_width: i32,
        #[command(flatten)]
        common: Common,
    },
    /// Age and gender of every face (Adience networks).
    AgeGender {
        /// The age classifier (labels: the age bins).
        #[arg(long)]
        age_model: PathBuf,
        /// The gender classifier.
        #[arg(long)]
        gender_model: Option<PathBuf>,
        /// Align each face before classifying. With an ONNX face detector: the book's FaceAligner from its
        /// eye keypoints (eyes levelled, the left eye at (0.35, 0.35) of a 256 px face). With haar: the
        /// face rotated so that the eyes this OpenCV eye cascade finds are level.
        #[arg(long, num_args = 0..=1, default_missing_value = edge_demo::DEFAULT_EYE_CASCADE)]
        align: Option<PathBuf>,
        #[command(flatten)]
        faces: FaceArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Predict each frame's or image's rotation (0/90/180/270) and write the corrected one.
    Orientation {
        /// The orientation classifier (labels 0, 90, 180, 270).
        #[arg(long, short = 'm')]
        model: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Detect objects in each frame: boxes with label and score, one colour per class (the book's
    /// chapter-17 video demo). The model is one of our exported detectors (its size, normalisation
    /// and labels in its metadata) or a TFOD-contract model made elsewhere (uint8 NHWC in; give
    /// --labels, and --size when it was trained at other than 300x300), e.g.
    ///   edge-demo detect --model edge-demo/assets/ped_ssdlite.onnx --labels person.txt
    ///     --source vtest.avi --output boxes.mp4 --json frames.jsonl
    Detect {
        /// The ONNX detector.
        #[arg(long, short = 'm')]
        model: PathBuf,
        /// The lowest score drawn and reported (the book's --confidence).
        #[arg(long, default_value_t = 0.5)]
        min_score: f32,
        #[command(flatten)]
        common: Common,
    },
    /// Find every face: boxes with scores (and, from an ONNX detector, eye, nose, mouth and ear
    /// keypoints) drawn, and written with --json as detections that `runtime eval-detections` scores
    /// against a record file, e.g. the Haar cascade against BlazeFace on dlib's faces:
    ///   edge-demo faces --face-detector haar --source photos/ --json haar.jsonl
    Faces {
        #[command(flatten)]
        faces: FaceArgs,
        #[command(flatten)]
        common: Common,
    },
    /// Check OpenCV, the face detector, a video source and ONNX Runtime.
    Doctor {
        /// Haar cascade for face detection.
        #[arg(long, default_value = edge_demo::DEFAULT_FACE_CASCADE)]
        cascade: PathBuf,
        /// A video file or camera index to open, read one frame from and search for faces.
        #[arg(long)]
        source: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    models::cli::exit(run(Cli::parse()))
}

fn open(model: &std::path::Path, c: &Common, threads: Option<usize>) -> Result<Model, runtime::RuntimeError> {
    // The capture thread and the other pipelines work while a model runs: its threads sleep between runs.
    Model::open(model, &SessionOptions { provider: c.provider, threads, share_cores: true }, &c.preprocess)
}

fn open_detector(model: &std::path::Path, c: &Common, threads: Option<usize>) -> Result<Detector, runtime::detect::DetectError> {
    Detector::open(model, &SessionOptions { provider: c.provider, threads, share_cores: true }, &c.preprocess)
}

/// What each worker's pipeline is made of.
struct Recipe<'a> {
    kind: Kind,
    model: &'a std::path::Path,
    second: Option<&'a std::path::Path>,
    faces: Option<&'a FaceArgs>,
    align: Option<&'a std::path::Path>,
    panel_width: i32,
    top: usize,
    min_score: f32,
}

fn go(r: Recipe, c: &Common, progress: bool) -> Result<()> {
    let source = SourceSpec::parse(&c.source)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = c.workers.unwrap_or(if source.is_live() { 1 } else { cores });
    // several pipelines at once: one ONNX Runtime thread each unless told otherwise
    let threads = c.threads.or((workers > 1).then_some(1));
    let make = || -> Result<Pipeline, edge_demo::DemoError> {
        let faces = r.faces.map(|f| f.open(c, threads, r.align)).transpose()?;
        let second = r.second.map(|m| open(m, c, threads)).transpose()?;
        let (model, detector) = match r.kind {
            Kind::Detect => (None, Some(open_detector(r.model, c, threads)?)),
            Kind::Faces => (None, None),
            Kind::Classify | Kind::Emotion | Kind::AgeGender | Kind::Orientation => (Some(open(r.model, c, threads)?), None),
        };
        Ok(Pipeline {
            kind: r.kind,
            model,
            detector,
            min_score: r.min_score,
            second,
            faces,
            align: r.align.is_some(),
            ten_crop: c.ten_crop,
            panel_width: r.panel_width,
            top: r.top,
        })
    };
    let outputs = Outputs { output: c.output.clone(), json: c.json.clone(), show: c.show, max_frames: c.max_frames, progress };
    let summary = app::run(&make, workers, &source, &outputs)?;
    println!("{summary}");
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    cli.verbosity.init_logging();
    let progress = !cli.verbosity.quiet;
    match cli.command {
        Command::Classify { model, top, common } => {
            go(Recipe { kind: Kind::Classify, model: &model, second: None, faces: None, align: None, panel_width: 0, top, min_score: 0.0 }, &common, progress)
        }
        Command::Emotion { model, faces, panel_width, common } => go(
            Recipe { kind: Kind::Emotion, model: &model, second: None, faces: Some(&faces), align: None, panel_width, top: 1, min_score: 0.0 },
            &common,
            progress,
        ),
        Command::AgeGender { age_model, gender_model, align, faces, common } => go(
            Recipe {
                kind: Kind::AgeGender,
                model: &age_model,
                second: gender_model.as_deref(),
                faces: Some(&faces),
                align: align.as_deref(),
                panel_width: 0,
                top: 1,
                min_score: 0.0,
            },
            &common,
            progress,
        ),
        Command::Orientation { model, common } => go(
            Recipe { kind: Kind::Orientation, model: &model, second: None, faces: None, align: None, panel_width: 0, top: 1, min_score: 0.0 },
            &common,
            progress,
        ),
        Command::Detect { model, min_score, common } => {
            go(Recipe { kind: Kind::Detect, model: &model, second: None, faces: None, align: None, panel_width: 0, top: 1, min_score }, &common, progress)
        }
        Command::Faces { faces, common } => go(
            Recipe {
                kind: Kind::Faces,
                model: std::path::Path::new(""),
                second: None,
                faces: Some(&faces),
                align: None,
                panel_width: 0,
                top: 1,
                min_score: 0.0,
            },
            &common,
            progress,
        ),
        Command::Doctor { cascade, source, json } => {
            let report = edge_demo::doctor::run(&cascade, source.as_deref())?;
            let ort = runtime::doctor::run(runtime::Provider::Cpu, None);
            if json {
                let ort = models::cli::Check::of(&ort);
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "video": report, "onnxruntime": ort }))?);
            } else {
                println!("{report}");
                match &ort {
                    Ok(r) => println!("{r}"),
                    Err(e) => println!("onnxruntime     FAILED: {e}"),
                }
            }
            let failures: Vec<String> =
                [report.face_cascade.err(), report.source.and_then(|s| s.err()), ort.err().map(|e| e.to_string())].into_iter().flatten().collect();
            if !failures.is_empty() {
                anyhow::bail!("{}", failures.join("; "));
            }
            Ok(())
        }
    }
}

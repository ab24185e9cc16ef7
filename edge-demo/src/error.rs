//! What can go wrong in the video CLI. Every message names the flag, file, source or model it is about;
//! OpenCV's and the runtime's own errors pass through unchanged.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    OpenCv(#[from] opencv::Error),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error(transparent)]
    Detect(#[from] runtime::detect::DetectError),
    #[error("this pipeline needs a detector (--model, one of our exported detectors or a TFOD-contract model)")]
    NoDetector,
    #[error("this pipeline needs a classifier (--model)")]
    NoModel,
    #[error("--source {0}: no such file or folder (a video file, a camera index, an rtsp:// or http:// URL, or a folder of images)")]
    NoSource(String),
    #[error("{}: cannot list", path.display())]
    ListFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--source {}: the folder holds no files", .0.display())]
    EmptyFolder(PathBuf),
    #[error("--source {name}: OpenCV cannot open it")]
    OpenSource {
        name: String,
        #[source]
        source: opencv::Error,
    },
    #[error("--source {0}: no camera with this index can be opened (is a camera connected, and /dev/video{0} readable?)")]
    NoCamera(i32),
    #[error("--source {}: OpenCV cannot decode this file (not a video, or a codec its FFmpeg back end lacks)", .0.display())]
    UndecodableVideo(PathBuf),
    #[error("--source {0}: the stream cannot be opened")]
    NoStream(String),
    #[error("--output {}: unsupported video extension '{ext}' (use .mp4, .m4v, .mov, .avi or .mkv; or a folder for image sources)", path.display())]
    VideoExtension { path: PathBuf, ext: String },
    #[error("--output {}: cannot create the folder", path.display())]
    OutputFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: OpenCV could not write this image", .0.display())]
    WriteImage(PathBuf),
    #[error("--output {}: OpenCV cannot write {codec} video to this file (codec unavailable or folder not writable)", path.display())]
    WriteVideo { path: PathBuf, codec: &'static str },
    #[error("--json {}: cannot create", path.display())]
    CreateJson {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--json {}: cannot write", path.display())]
    WriteJson {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no frame could be read from the source ({0} skipped)")]
    NoFrames(usize),
    #[error(
        "{}: the orientation pipeline needs a model whose labels are rotation angles (0, 90, 180, 270, as `trainer prepare orientation` writes); this one has {labels:?}",
        model.display()
    )]
    NotOrientation { model: PathBuf, labels: Vec<String> },
    #[error("--face-detector {}: not a face detector in the BlazeFace contract (float [1, S, S, 3] in; regressors [1, A, 16] and scores [1, A, 1] out)", .0.display())]
    NotFaceDetector(PathBuf),
    #[error("--face-detector {0}")]
    FaceSetting(String),
    #[error("--face-detector {0}: no such file (give haar, blazeface, blazeface-full or an ONNX file)")]
    NoFaceModel(PathBuf),
    #[error("this pipeline needs a face detector")]
    NoFaceDetector,
    #[error("region {region:?} is outside the {width}x{height} frame")]
    RegionOutside { region: opencv::core::Rect, width: i32, height: i32 },
    #[error("{}: no such cascade file (Debian's opencv-data installs them under {})", .0.display(), crate::HAAR_DIR)]
    NoCascade(PathBuf),
    #[error("{}: OpenCV cannot load this cascade", path.display())]
    BadCascade {
        path: PathBuf,
        #[source]
        source: Option<opencv::Error>,
    },
}

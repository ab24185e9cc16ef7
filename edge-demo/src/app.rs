//! The frame loop: capture → pipeline → outputs (annotated video or images, a window, JSON lines), and
//! the summary at the end (frames, FPS, per-stage latency).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use opencv::core::{Mat, Size};
use opencv::prelude::*;
use opencv::{highgui, imgcodecs, imgproc, videoio};
use serde::Serialize;

use crate::pipeline::{Pipeline, StageTimes};
use crate::source::{Capture, Frame, SourceSpec};
use crate::DemoError;

type Result<T, E = DemoError> = std::result::Result<T, E>;

/// Where results go.
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// A video file (codec from its extension) or, for image-folder sources, a folder.
    pub output: Option<PathBuf>,
    /// JSON lines, one per frame, then one `{"summary": …}` line.
    pub json: Option<PathBuf>,
    pub show: bool,
    /// Stop after this many frames (cameras and streams run until stopped otherwise).
    pub max_frames: Option<usize>,
    pub progress: bool,
}

/// Latency percentiles of one stage, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub stage: &'static str,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
}

/// What `edge-demo` prints at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub frames: usize,
    /// Frames that failed to decode (named in `skipped_items`).
    pub skipped: usize,
    pub skipped_items: Vec<(String, String)>,
    /// Live sources: frames replaced by newer ones while the pipeline was busy.
    pub dropped: usize,
    pub seconds: f64,
    pub fps: f64,
    pub stages: Vec<Stage>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} frames in {:.2} s: {:.1} FPS ({} skipped, {} dropped)", self.frames, self.seconds, self.fps, self.skipped, self.dropped)?;
        for (name, why) in self.skipped_items.iter().take(5) {
            writeln!(f, "  skipped {name}: {why}")?;
        }
        write!(f, "stage latency (ms):")?;
        for s in &self.stages {
            write!(f, "  {} p50 {:.2} p99 {:.2}", s.stage, s.p50_ms, s.p99_ms)?;
        }
        Ok(())
    }
}

/// The FourCC for a video file's extension.
pub fn fourcc_for(path: &Path) -> Result<(i32, &'static str)> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    let code = match ext.as_str() {
        "mp4" | "m4v" | "mov" => "mp4v",
        "avi" => "MJPG",
        "mkv" => "XVID",
        _ => return Err(DemoError::VideoExtension { path: path.to_path_buf(), ext: ext.clone() }),
    };
    let c: Vec<char> = code.chars().collect();
    Ok((videoio::VideoWriter::fourcc(c[0], c[1], c[2], c[3])?, code))
}

enum Sink {
    None,
    Video { path: PathBuf, writer: Option<videoio::VideoWriter>, size: Size, fps: f64 },
    Folder(PathBuf),
}

impl Sink {
    fn new(out: Option<&Path>, folder_source: bool, fps: f64) -> Result<Self> {
        let Some(p) = out else { return Ok(Self::None) };
        if folder_source && (p.is_dir() || p.extension().is_none()) {
            std::fs::create_dir_all(p).map_err(|source| DemoError::OutputFolder { path: p.to_path_buf(), source })?;
            return Ok(Self::Folder(p.to_path_buf()));
        }
        fourcc_for(p)?;
        Ok(Self::Video { path: p.to_path_buf(), writer: None, size: Size::default(), fps: if fps > 0.0 { fps } else { 25.0 } })
    }

    fn write(&mut self, frame: &Mat, name: Option<&Path>, index: usize) -> Result<()> {
        match self {
            Self::None => Ok(()),
            Self::Folder(dir) => {
                let file = name.and_then(Path::file_name).map_or_else(|| format!("{index:06}.png").into(), |n| n.to_os_string());
                let path = dir.join(file);
                if !imgcodecs::imwrite_def(path.as_os_str(), frame)? {
                    return Err(DemoError::WriteImage(path));
                }
                Ok(())
            }
            Self::Video { path, writer, size, fps } => {
                if writer.is_none() {
                    let (code, name) = fourcc_for(path)?;
                    *size = frame.size()?;
                    let w = videoio::VideoWriter::new(path.as_os_str(), code, *fps, *size, true)?;
                    if !w.is_opened()? {
                        return Err(DemoError::WriteVideo { path: path.clone(), codec: name });
                    }
                    *writer = Some(w);
                }
                let w = writer.as_mut().expect("opened");
                if frame.size()? == *size {
                    w.write(frame)?;
                } else {
                    // frames of another size (an image folder, a rotated frame) are fitted to the video's
                    let mut fitted = Mat::default();
                    imgproc::resize(frame, &mut fitted, *size, 0.0, 0.0, imgproc::INTER_AREA)?;
                    w.write(&fitted)?;
                }
                Ok(())
            }
        }
    }

    fn finish(self) -> Result<()> {
        if let Self::Video { writer: Some(mut w), .. } = self {
            w.release()?;
        }
        Ok(())
    }
}

fn stage(name: &'static str, mut v: Vec<f64>) -> Stage {
    v.sort_by(f64::total_cmp);
    let mean = if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    Stage { stage: name, p50_ms: runtime::eval::quantile(&v, 0.5), p99_ms: runtime::eval::quantile(&v, 0.99), mean_ms: mean }
}

fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// One processed frame on its way to the outputs.
struct Done {
    frame: Frame,
    out: crate::pipeline::Outcome,
    times: StageTimes,
    wait_ms: f64,
}

/// What the workers take frames from, one at a time: the capture, until it ends, `--max-frames` frames
/// were taken or the loop is told to stop. Each frame comes with the milliseconds it took to arrive.
struct Frames {
    capture: Capture,
    taken: usize,
    max: Option<usize>,
    stop: Arc<AtomicBool>,
}

impl Iterator for Frames {
    type Item = (Frame, f64);

    fn next(&mut self) -> Option<(Frame, f64)> {
        if self.stop.load(Ordering::Relaxed) || self.max.is_some_and(|m| self.taken >= m) {
            return None;
        }
        let s = Instant::now();
        let frame = self.capture.next_frame()?;
        self.taken += 1;
        Some((frame, s.elapsed().as_secs_f64() * 1e3))
    }
}

/// Runs the pipelines made by `make` over `source` until it ends, `max_frames` is reached, `q` is pressed
/// in the window or Ctrl-C; the video and JSON files are complete in every case.
///
/// With `workers > 1`, that many pipelines (each with its own detector and model sessions) process
/// frames concurrently, and the outputs are written in frame order.
pub fn run(make: &(dyn Fn() -> Result<Pipeline> + Sync), workers: usize, source: &SourceSpec, o: &Outputs) -> Result<Summary> {
    let workers = workers.max(1);
    if workers > 1 {
        // the frames are the parallelism: OpenCV's own thread pool would only oversubscribe the cores
        opencv::core::set_num_threads(1)?;
    }
    let mut pipelines = Vec::with_capacity(workers);
    for _ in 0..workers {
        let p = make()?;
        p.check()?;
        pipelines.push(p);
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // a second Ctrl-C while finishing falls through to the default handler (ctrlc allows one)
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    }
    let capture = Capture::start(source)?;
    let fps = capture.fps();
    let mut json = match &o.json {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p).map_err(|source| DemoError::CreateJson { path: p.clone(), source })?)),
        None => None,
    };
    let mut sink = Sink::new(o.output.as_deref(), matches!(source, SourceSpec::Folder(_)), fps)?;
    let show = o.show && has_display();
    if o.show && !show {
        tracing::warn!("--show: no display (DISPLAY / WAYLAND_DISPLAY unset), not opening a window");
    }
    let bar = data::progress::bar(0, "frames", o.progress);
    let (mut wait, mut detect, mut infer, mut draw, mut write, mut whole) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    let json_path = o.json.clone().unwrap_or_default();
    let json_error = |source| DemoError::WriteJson { path: json_path.clone(), source };
    let start = Instant::now();
    let mut frames = 0;
    // the pipelines work on frames concurrently; the results come back in frame order
    let input = Frames { capture, taken: 0, max: o.max_frames, stop: stop.clone() };
    let mut results = data::pool::map_ordered(input, pipelines, 2 * workers, |p: &mut Pipeline, (frame, wait_ms): (Frame, f64)| {
        let mut times = StageTimes::default();
        p.process(&frame.image, &mut times).map(|out| Done { frame, out, times, wait_ms })
    });
    let written = results.by_ref().try_for_each(|done| -> Result<()> {
        let d = done?;
        let s = Instant::now();
        let to_write = if matches!(sink, Sink::Folder(_)) { d.out.corrected.as_ref().unwrap_or(&d.out.annotated) } else { &d.out.annotated };
        sink.write(to_write, d.frame.name.as_deref(), d.frame.index)?;
        if let Some(j) = json.as_mut() {
            let mut line = serde_json::json!({"frame": d.frame.index, "timestamp_ms": d.frame.timestamp_ms});
            if let Some(n) = &d.frame.name {
                line["image"] = serde_json::json!(n);
            }
            if let (Some(l), Some(r)) = (line.as_object_mut(), d.out.json.as_object()) {
                l.extend(r.clone());
            }
            writeln!(j, "{line}").map_err(json_error)?;
        }
        if show {
            highgui::imshow("edge-demo", &d.out.annotated)?;
            if highgui::wait_key(1)? == i32::from(b'q') {
                stop.store(true, Ordering::Relaxed);
            }
        }
        let out_ms = s.elapsed().as_secs_f64() * 1e3;
        write.push(out_ms);
        whole.push(d.times.detect + d.times.infer + d.times.draw + out_ms);
        wait.push(d.wait_ms);
        detect.push(d.times.detect);
        infer.push(d.times.infer);
        draw.push(d.times.draw);
        frames += 1;
        bar.inc(1);
        Ok(())
    });
    // a failure stops the workers too (each finishes the frame it holds); then the capture stops
    let cap = results.finish().capture.finish();
    written?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    sink.finish()?;
    let summary = Summary {
        frames,
        skipped: cap.skipped.len(),
        skipped_items: cap.skipped,
        dropped: cap.dropped,
        seconds,
        fps: frames as f64 / seconds.max(1e-9),
        stages: vec![
            stage("capture", wait),
            stage("detect", detect),
            stage("infer", infer),
            stage("draw", draw),
            stage("output", write),
            stage("frame", whole),
        ],
    };
    if let Some(j) = json.as_mut() {
        writeln!(j, "{}", serde_json::json!({ "summary": summary })).map_err(json_error)?;
        j.flush().map_err(json_error)?;
    }
    if frames == 0 {
        return Err(DemoError::NoFrames(summary.skipped));
    }
    Ok(summary)
}

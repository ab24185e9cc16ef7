//! Frame sources: a video file, a camera index, an RTSP/HTTP stream or a folder of images.
//!
//! A capture thread reads ahead of the pipeline. For files and folders every frame is kept (a bounded
//! queue: the reader waits for the pipeline, nothing is dropped). For live sources only the newest frame
//! is kept: a slow model never builds up lag, and the frames it had no time for are counted as dropped.
//! A frame that fails to decode in the middle of a file is skipped and counted; reading stops after
//! `MAX_FAILURES` failures in a row.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use opencv::core::Mat;
use opencv::prelude::*;
use opencv::{imgcodecs, videoio};

use crate::DemoError;

type Result<T, E = DemoError> = std::result::Result<T, E>;

/// Consecutive read failures after which a file is taken as ended.
pub const MAX_FAILURES: usize = 25;

/// What `--source` names.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    File(PathBuf),
    Camera(i32),
    Stream(String),
    Folder(PathBuf),
}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<Self> {
        if let Ok(i) = s.parse::<i32>() {
            return Ok(Self::Camera(i));
        }
        if s.contains("://") {
            return Ok(Self::Stream(s.to_string()));
        }
        let p = PathBuf::from(s);
        if p.is_dir() {
            Ok(Self::Folder(p))
        } else if p.is_file() {
            Ok(Self::File(p))
        } else {
            Err(DemoError::NoSource(s.to_string()))
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, Self::Camera(_) | Self::Stream(_))
    }
}

/// One captured frame.
pub struct Frame {
    /// Position in the source (frames that failed to decode keep their numbers).
    pub index: usize,
    /// Milliseconds from the start of the video (files) or of the capture (live sources).
    pub timestamp_ms: f64,
    /// BGR, 8 bits per channel.
    pub image: Mat,
    /// The image file it came from (folder sources).
    pub name: Option<PathBuf>,
}

/// Counts kept by the capture thread.
#[derive(Debug, Default, Clone)]
pub struct CaptureStats {
    /// Frames that failed to decode, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Live sources: frames replaced by a newer one before the pipeline took them.
    pub dropped: usize,
    /// Frames per second the source declares (0 when unknown).
    pub fps: f64,
}

enum Queue {
    /// Files: every frame, in order.
    Bounded(std::sync::mpsc::Receiver<Frame>),
    /// Live: the newest frame only.
    Latest(Arc<(Mutex<LatestSlot>, Condvar)>),
}

#[derive(Default)]
struct LatestSlot {
    frame: Option<Frame>,
    done: bool,
}

/// A running capture.
pub struct Capture {
    queue: Queue,
    stats: Arc<Mutex<CaptureStats>>,
    thread: Option<JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| DemoError::ListFolder { path: dir.to_path_buf(), source })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    Ok(v)
}

fn open_video(spec: &SourceSpec) -> Result<videoio::VideoCapture> {
    let (cap, name) = match spec {
        SourceSpec::Camera(i) => (videoio::VideoCapture::new(*i, videoio::CAP_ANY), format!("camera {i}")),
        SourceSpec::File(p) => (videoio::VideoCapture::from_file(p.as_os_str(), videoio::CAP_ANY), p.display().to_string()),
        SourceSpec::Stream(u) => (videoio::VideoCapture::from_file(u, videoio::CAP_ANY), u.clone()),
        SourceSpec::Folder(_) => unreachable!("folders are read with imread"),
    };
    let cap = cap.map_err(|source| DemoError::OpenSource { name: name.clone(), source })?;
    if !cap.is_opened().unwrap_or(false) {
        match spec {
            SourceSpec::Camera(i) => return Err(DemoError::NoCamera(*i)),
            SourceSpec::File(p) => return Err(DemoError::UndecodableVideo(p.clone())),
            SourceSpec::Stream(_) | SourceSpec::Folder(_) => return Err(DemoError::NoStream(name)),
        }
    }
    Ok(cap)
}

impl Capture {
    pub fn start(spec: &SourceSpec) -> Result<Self> {
        let stats = Arc::new(Mutex::new(CaptureStats::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let SourceSpec::Folder(dir) = spec {
            let files = image_files(dir)?;
            if files.is_empty() {
                return Err(DemoError::EmptyFolder(dir.clone()));
            }
            let (tx, rx) = std::sync::mpsc::sync_channel(4);
            let st = stats.clone();
            let thread = std::thread::spawn(move || {
                for (index, f) in files.into_iter().enumerate() {
                    let image = imgcodecs::imread(f.as_os_str(), imgcodecs::IMREAD_COLOR).unwrap_or_default();
                    if image.empty() {
                        st.lock().expect("stats").skipped.push((f.display().to_string(), "not an image OpenCV can decode".into()));
                        continue;
                    }
                    if tx.send(Frame { index, timestamp_ms: 0.0, image, name: Some(f) }).is_err() {
                        return;
                    }
                }
            });
            return Ok(Self { queue: Queue::Bounded(rx), stats, thread: Some(thread), stop });
        }
        let mut cap = open_video(spec)?;
        let fps = cap.get(videoio::CAP_PROP_FPS).unwrap_or(0.0);
        let total = cap.get(videoio::CAP_PROP_FRAME_COUNT).unwrap_or(0.0).max(0.0) as usize;
        stats.lock().expect("stats").fps = fps;
        let live = spec.is_live();
        let name = match spec {
            SourceSpec::File(p) => p.display().to_string(),
            SourceSpec::Camera(i) => format!("camera {i}"),
            SourceSpec::Stream(u) => u.clone(),
            SourceSpec::Folder(p) => p.display().to_string(),
        };
        let start = Instant::now();
        let (st, stop2) = (stats.clone(), stop.clone());
        let next = move |cap: &mut videoio::VideoCapture, index: usize| -> Option<Result<Frame, String>> {
            let mut image = Mat::default();
            match cap.read(&mut image) {
                Ok(true) if !image.empty() => {
                    let timestamp_ms = if live { start.elapsed().as_secs_f64() * 1e3 } else { cap.get(videoio::CAP_PROP_POS_MSEC).unwrap_or(0.0) };
                    Some(Ok(Frame { index, timestamp_ms, image, name: None }))
                }
                // a file ends when its declared frames are read (or when it declares none)
                Ok(_) if !live && (total == 0 || index >= total) => None,
                Ok(_) => Some(Err("the frame could not be decoded".into())),
                Err(e) => Some(Err(e.to_string())),
            }
        };
        let (queue, thread) = if live {
            let slot = Arc::new((Mutex::new(LatestSlot::default()), Condvar::new()));
            let s2 = slot.clone();
            let thread = std::thread::spawn(move || {
                let mut failures = 0;
                let mut index = 0;
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) && failures < MAX_FAILURES {
                    match next(&mut cap, index) {
                        Some(Ok(f)) => {
                            failures = 0;
                            let (m, cv) = &*s2;
                            let mut g = m.lock().expect("slot");
                            if g.frame.replace(f).is_some() {
                                st.lock().expect("stats").dropped += 1;
                            }
                            cv.notify_one();
                        }
                        Some(Err(e)) => {
                            failures += 1;
                            st.lock().expect("stats").skipped.push((format!("{name} frame {index}"), e));
                        }
                        None => break,
                    }
                    index += 1;
                }
                let (m, cv) = &*s2;
                m.lock().expect("slot").done = true;
                cv.notify_all();
            });
            (Queue::Latest(slot), thread)
        } else {
            let (tx, rx) = std::sync::mpsc::sync_channel(8);
            let thread = std::thread::spawn(move || {
                let mut failures = 0;
                let mut index = 0;
                while failures < MAX_FAILURES {
                    match next(&mut cap, index) {
                        Some(Ok(f)) => {
                            failures = 0;
                            if tx.send(f).is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            failures += 1;
                            st.lock().expect("stats").skipped.push((format!("{name} frame {index}"), e));
                        }
                        None => return,
                    }
                    index += 1;
                }
            });
            (Queue::Bounded(rx), thread)
        };
        Ok(Self { queue, stats, thread: Some(thread), stop })
    }

    /// Frames per second the source declares (0 when unknown).
    pub fn fps(&self) -> f64 {
        self.stats.lock().expect("stats").fps
    }

    /// The next frame to process; None when the source is exhausted.
    pub fn next_frame(&mut self) -> Option<Frame> {
        match &self.queue {
            Queue::Bounded(rx) => rx.recv().ok(),
            Queue::Latest(slot) => {
                let (m, cv) = &**slot;
                let mut g = m.lock().expect("slot");
                loop {
                    if let Some(f) = g.frame.take() {
                        return Some(f);
                    }
                    if g.done {
                        return None;
                    }
                    g = cv.wait(g).expect("slot");
                }
            }
        }
    }

    /// Stops reading (live sources run until told) and returns the counts.
    pub fn finish(mut self) -> CaptureStats {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Queue::Bounded(_) = self.queue {
            // dropping the receiver ends a reader blocked on a full queue
            self.queue = Queue::Latest(Arc::new((Mutex::new(LatestSlot { frame: None, done: true }), Condvar::new())));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let s = self.stats.lock().expect("stats").clone();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(SourceSpec::parse("0").unwrap(), SourceSpec::Camera(0));
        assert_eq!(SourceSpec::parse("rtsp://cam/1").unwrap(), SourceSpec::Stream("rtsp://cam/1".into()));
        assert!(SourceSpec::parse("rtsp://cam/1").unwrap().is_live());
        let dir = std::env::temp_dir();
        assert_eq!(SourceSpec::parse(dir.to_str().unwrap()).unwrap(), SourceSpec::Folder(dir));
        let e = SourceSpec::parse("/no/such/video.mp4").unwrap_err().to_string();
        assert!(e.contains("/no/such/video.mp4: no such file"), "{e}");
    }
}

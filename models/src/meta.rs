//! The model-file contract: what an exported ONNX file says about itself in `metadata_props`, so that
//! the runtime, the inference server and the video CLI need no second config (timm's `PretrainedCfg`
//! is the model: one type that every consumer reads).
//!
//! [`ModelMeta`] is the one writer ([`ModelMeta::to_props`], used by the exporter) and the one reader
//! ([`ModelMeta::from_props`], used by runtime and edge-demo) of every `dlcv.*` key. No other module
//! spells a key: a consumer asks this type, never the string map.
//!
//! Room for detection: [`Task`] is the switch. A detector will add a `Task::Detection` variant carrying
//! its box format (e.g. normalised `ymin, xmin, ymax, xmax`), score threshold and class names, written
//! under keys of its own; classification files keep exactly the keys they have now.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The key prefix of every entry this toolchain writes.
pub const PREFIX: &str = "dlcv.";

/// Every key this module writes or reads, without the prefix.
mod key {
    pub const ARCHITECTURE: &str = "architecture";
    pub const TASK: &str = "task";
    pub const ORDINAL: &str = "ordinal";
    pub const LABELS: &str = "labels";
    pub const INPUT_SIZE: &str = "input_size";
    pub const INPUT_CHANNELS: &str = "input_channels";
    pub const LAYOUT: &str = "layout";
    pub const CHANNEL_ORDER: &str = "channel_order";
    pub const GRAYSCALE: &str = "grayscale";
    pub const MEAN: &str = "mean";
    pub const STD: &str = "std";
    pub const RESIZE_SHORT_SIDE: &str = "resize_short_side";
    pub const CROP: &str = "crop";
    pub const OUTPUTS: &str = "outputs";
    pub const RUN: &str = "run";
    pub const EPOCH: &str = "epoch";
    pub const PRODUCER: &str = "producer";
    pub const PARITY: &str = "parity";
    pub const DETECTOR: &str = "detector";
    pub const BOX_FORMAT: &str = "box_format";
    pub const LETTERBOX: &str = "letterbox";
}

/// The full metadata key (`dlcv.` + name).
fn full(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The full key under which the exporter records its parity report (JSON), once the file passed it.
pub fn parity_key() -> String {
    full(key::PARITY)
}

/// A metadata entry that is missing or does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetaError {
    #[error("metadata '{key}' = '{value}' does not parse: expected {expected}")]
    BadValue { key: String, value: String, expected: &'static str },
    #[error("metadata '{key}' is missing (the file has other {PREFIX}* entries)")]
    Missing { key: String },
}

/// What the network computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// One probability per class.
    Classification,
    /// Boxes with a class and a score each (the graph carries a [`crate::detect::DetectorSpec`]).
    Detection,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classification => "classification",
            Self::Detection => "detection",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Task {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "classification" => Ok(Self::Classification),
            "detection" => Ok(Self::Detection),
            _ => Err(()),
        }
    }
}

/// Memory order of one input sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[N, C, H, W]` (PyTorch, our exports).
    Nchw,
    /// `[N, H, W, C]` (Keras / TensorFlow exports).
    Nhwc,
}

impl Layout {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nchw => "nchw",
            Self::Nhwc => "nhwc",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the image is brought to the input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Crop {
    /// Shorter side to `resize_short_side` (when set), then the centre crop.
    Center,
    /// The whole image resized to exactly the input size.
    Stretch,
}

impl Crop {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Center => "center",
            Self::Stretch => "stretch",
        }
    }
}

/// How an image becomes the network's input (what training did for validation images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// `[C, H, W]`; C is 1 (grey, BT.601 luma) or 3 (RGB).
    pub input: [usize; 3],
    pub layout: Layout,
    /// Per-channel mean and standard deviation in 0–255 pixel units: x = (pixel - mean) / std.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The shorter side is resized to this before the centre crop (0: no resize).
    pub resize_short_side: u32,
    pub crop: Crop,
}

/// Everything an exported file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// The registry name of the network (`models::zoo`).
    pub architecture: String,
    pub task: Task,
    /// One label per class, in output order (empty: class indices).
    pub labels: Vec<String>,
    pub preprocessing: Preprocessing,
    /// The run directory and epoch the weights came from (empty and 0 when unknown).
    pub run: String,
    pub epoch: usize,
    /// The labels are ordered (age bins): the runtime then also reports one-off accuracy.
    pub ordinal: bool,
    /// Who wrote the file, e.g. `dlcv exporter 0.1.0`.
    pub producer: String,
    /// The exporter's parity report (JSON), once the written file passed it.
    pub parity: Option<String>,
    /// A detector's priors, coder, thresholds, labels and box format (task `detection`); its labels
    /// are also `labels` (index 0 the background).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<crate::detect::DetectorSpec>,
}

impl ModelMeta {
    /// A file's metadata for `architecture`, written by this build of the toolchain.
    pub fn new(architecture: &str, task: Task, labels: Vec<String>, preprocessing: Preprocessing) -> Self {
        Self {
            architecture: architecture.to_string(),
            task,
            labels,
            preprocessing,
            run: String::new(),
            epoch: 0,
            ordinal: false,
            producer: format!("dlcv exporter {}", crate::VERSION),
            parity: None,
            detector: None,
        }
    }

    /// The `metadata_props` entries, keyed `dlcv.*`.
    pub fn to_props(&self) -> BTreeMap<String, String> {
        let p = &self.preprocessing;
        let list = |v: &[f32]| format!("[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "));
        let grey = p.input[0] == 1;
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(full(k), v);
        };
        put(key::ARCHITECTURE, self.architecture.clone());
        put(key::TASK, self.task.to_string());
        put(key::ORDINAL, self.ordinal.to_string());
        put(key::LABELS, serde_json::to_string(&self.labels).expect("strings serialise"));
        put(key::INPUT_SIZE, format!("{}x{}", p.input[2], p.input[1]));
        put(key::INPUT_CHANNELS, p.input[0].to_string());
        put(key::LAYOUT, p.layout.to_string());
        // descriptive only (the channel count decides): for people reading the file with other tools
        put(key::CHANNEL_ORDER, if grey { "gray".into() } else { "rgb".into() });
        put(key::GRAYSCALE, grey.to_string());
        put(key::MEAN, list(&p.mean));
        put(key::STD, list(&p.std));
        put(key::RESIZE_SHORT_SIDE, p.resize_short_side.to_string());
        put(key::CROP, p.crop.as_str().into());
        match &self.detector {
            Some(d) => {
                put(key::OUTPUTS, "detection_boxes, detection_scores, detection_classes, num_detections (TFOD)".into());
                put(key::DETECTOR, serde_json::to_string(d).expect("a detector spec serialises"));
                put(key::BOX_FORMAT, serde_json::to_value(d.box_format).expect("an enum").as_str().unwrap_or_default().to_string());
                // the image is resized to the input (SSD's training); no letterbox
                put(key::LETTERBOX, "false".into());
            }
            None => put(key::OUTPUTS, "probabilities (softmax over classes)".into()),
        }
        put(key::RUN, self.run.clone());
        put(key::EPOCH, self.epoch.to_string());
        put(key::PRODUCER, self.producer.clone());
        if let Some(parity) = &self.parity {
            put(key::PARITY, parity.clone());
        }
        m
    }

    /// Reads the `dlcv.*` entries back. `Ok(None)`: the file has none (a model made elsewhere).
    /// Entries that describe the network (architecture, run, producer) default to empty; every entry
    /// that decides how an image is fed must parse, and the input size must be there.
    pub fn from_props<'a, I>(props: I) -> Result<Option<Self>, MetaError>
    where
        I: IntoIterator<Item = (&'a String, &'a String)>,
    {
        let ours: BTreeMap<&str, &str> = props.into_iter().filter_map(|(k, v)| k.strip_prefix(PREFIX).map(|k| (k, v.as_str()))).collect();
        if ours.is_empty() {
            return Ok(None);
        }
        let get = |k: &str| ours.get(k).copied();
        let bad = |k: &str, v: &str, expected: &'static str| MetaError::BadValue { key: full(k), value: v.to_string(), expected };
        let parse_or = |k: &str, default: usize, expected: &'static str| -> Result<usize, MetaError> {
            get(k).map_or(Ok(default), |v| v.trim().parse().map_err(|_| bad(k, v, expected)))
        };
        let size = get(key::INPUT_SIZE).ok_or(MetaError::Missing { key: full(key::INPUT_SIZE) })?;
        let (w, h) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<usize>().ok()?, h.parse::<usize>().ok()?)))
            .filter(|&(w, h)| w > 0 && h > 0)
            .ok_or_else(|| bad(key::INPUT_SIZE, size, "WxH, e.g. 224x224"))?;
        let channels = parse_or(key::INPUT_CHANNELS, 3, "1 or 3")?;
        if channels != 1 && channels != 3 {
            return Err(bad(key::INPUT_CHANNELS, &channels.to_string(), "1 or 3"));
        }
        let layout = match get(key::LAYOUT) {
            Some("nchw") | None => Layout::Nchw,
            Some("nhwc") => Layout::Nhwc,
            Some(v) => return Err(bad(key::LAYOUT, v, "nchw or nhwc")),
        };
        let crop = match get(key::CROP) {
            Some("center") | None => Crop::Center,
            Some("stretch") => Crop::Stretch,
            Some(v) => return Err(bad(key::CROP, v, "center or stretch")),
        };
        let list = |k: &str, default: f32| -> Result<Vec<f32>, MetaError> {
            let Some(v) = get(k) else { return Ok(vec![default]) };
            serde_json::from_str::<Vec<f32>>(v).ok().filter(|l| l.len() == 1 || l.len() == channels).ok_or_else(|| bad(k, v, "a JSON list of 1 or C numbers"))
        };
        let flag = |k: &str| -> Result<bool, MetaError> {
            match get(k) {
                None | Some("false") => Ok(false),
                Some("true") => Ok(true),
                Some(v) => Err(bad(k, v, "true or false")),
            }
        };
        let task = match get(key::TASK) {
            None => Task::Classification,
            Some(v) => v.parse().map_err(|()| bad(key::TASK, v, "classification or detection"))?,
        };
        let detector = match get(key::DETECTOR) {
            None => None,
            Some(v) => Some(serde_json::from_str(v).map_err(|_| bad(key::DETECTOR, v, "a detector spec (JSON)"))?),
        };
        if task == Task::Detection && detector.is_none() {
            return Err(MetaError::Missing { key: full(key::DETECTOR) });
        }
        let labels = match get(key::LABELS) {
            None => vec![],
            Some(v) => serde_json::from_str(v).map_err(|_| bad(key::LABELS, v, "a JSON list of strings"))?,
        };
        let text = |k: &str| get(k).unwrap_or_default().to_string();
        Ok(Some(Self {
            architecture: text(key::ARCHITECTURE),
            task,
            labels,
            preprocessing: Preprocessing {
                input: [channels, h, w],
                layout,
                mean: list(key::MEAN, 0.0)?,
                std: list(key::STD, 1.0)?,
                resize_short_side: parse_or(key::RESIZE_SHORT_SIDE, 0, "a whole number of pixels")? as u32,
                crop,
            },
            run: text(key::RUN),
            epoch: parse_or(key::EPOCH, 0, "a whole number")?,
            ordinal: flag(key::ORDINAL)?,
            producer: text(key::PRODUCER),
            parity: get(key::PARITY).map(str::to_string),
            detector,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelMeta {
        let mut m = ModelMeta::new(
            "emotion-vgg",
            Task::Classification,
            vec!["angry".into(), "happy, really".into(), "\"quoted\"".into()],
            Preprocessing { input: [1, 48, 40], layout: Layout::Nchw, mean: vec![127.5], std: vec![63.75], resize_short_side: 52, crop: Crop::Center },
        );
        m.run = "runs/fer".into();
        m.epoch = 7;
        m.ordinal = true;
        m.parity = Some(r#"{"max_abs_diff":1e-7}"#.into());
        m
    }

    #[test]
    fn round_trips_through_props() {
        let m = sample();
        let props = m.to_props();
        assert!(props.keys().all(|k| k.starts_with(PREFIX)), "{props:?}");
        assert_eq!(props["dlcv.input_size"], "40x48", "width x height");
        assert_eq!(props["dlcv.channel_order"], "gray");
        assert_eq!(ModelMeta::from_props(&props).unwrap(), Some(m.clone()));
        // without a parity report, the key is absent and reads back as None
        let mut m2 = m;
        m2.parity = None;
        m2.preprocessing = Preprocessing {
            input: [3, 224, 224],
            layout: Layout::Nhwc,
            mean: vec![1.0, 2.0, 3.0],
            std: vec![4.0, 5.0, 6.0],
            resize_short_side: 0,
            crop: Crop::Stretch,
        };
        let props = m2.to_props();
        assert!(!props.contains_key(&parity_key()));
        assert_eq!(ModelMeta::from_props(&props).unwrap(), Some(m2));
    }

    #[test]
    fn a_detector_round_trips_with_its_spec_and_needs_it() {
        let zoo = crate::zoo::build("ssd-tiny", Some(2), Some(1)).unwrap();
        let mut spec = zoo.detector.clone().unwrap();
        spec.labels = vec!["background".into(), "car".into(), "sign".into()];
        let pre = Preprocessing { input: [1, 128, 128], layout: Layout::Nchw, mean: vec![30.0], std: vec![55.0], resize_short_side: 0, crop: Crop::Stretch };
        let mut m = ModelMeta::new("ssd-tiny", Task::Detection, spec.labels.clone(), pre);
        m.detector = Some(spec);
        let props = m.to_props();
        assert_eq!((props["dlcv.task"].as_str(), props["dlcv.box_format"].as_str()), ("detection", "xyxy_pixels"));
        assert_eq!(ModelMeta::from_props(&props).unwrap(), Some(m));
        let mut props = props;
        props.remove("dlcv.detector");
        assert_eq!(ModelMeta::from_props(&props).unwrap_err(), MetaError::Missing { key: "dlcv.detector".into() });
    }

    #[test]
    fn a_file_without_our_keys_has_no_meta_and_foreign_keys_are_ignored() {
        let foreign: BTreeMap<String, String> = [("producer".to_string(), "tf2onnx".to_string())].into();
        assert_eq!(ModelMeta::from_props(&foreign).unwrap(), None);
        let mut props = sample().to_props();
        props.insert("author".into(), "someone".into());
        assert_eq!(ModelMeta::from_props(&props).unwrap(), Some(sample()));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v) in [
            ("dlcv.input_size", "48"),
            ("dlcv.input_size", "0x48"),
            ("dlcv.input_channels", "2"),
            ("dlcv.layout", "chw"),
            ("dlcv.crop", "middle"),
            ("dlcv.mean", "[1, 2]"),
            ("dlcv.std", "one"),
            ("dlcv.ordinal", "yes"),
            ("dlcv.task", "segmentation"),
            ("dlcv.labels", "a,b"),
            ("dlcv.epoch", "-1"),
        ] {
            let mut props = sample().to_props();
            props.insert(k.into(), v.into());
            let e = ModelMeta::from_props(&props).unwrap_err();
            assert!(matches!(&e, MetaError::BadValue { key, .. } if key == k), "{k}={v}: {e}");
            assert!(e.to_string().contains(k) && e.to_string().contains(v), "{e}");
        }
        let mut props = sample().to_props();
        props.remove("dlcv.input_size");
        assert_eq!(ModelMeta::from_props(&props).unwrap_err(), MetaError::Missing { key: "dlcv.input_size".into() });
    }

    #[test]
    fn older_files_with_fewer_keys_read_with_the_defaults() {
        let props: BTreeMap<String, String> =
            [("dlcv.input_size", "28x28"), ("dlcv.input_channels", "1")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let m = ModelMeta::from_props(&props).unwrap().unwrap();
        assert_eq!(
            m.preprocessing,
            Preprocessing { input: [1, 28, 28], layout: Layout::Nchw, mean: vec![0.0], std: vec![1.0], resize_short_side: 0, crop: Crop::Center }
        );
        assert_eq!((m.task, m.labels.len(), m.ordinal, m.parity), (Task::Classification, 0, false, None));
    }
}

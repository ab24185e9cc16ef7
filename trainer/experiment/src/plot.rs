//! `trainer plot`: loss and accuracy curves of a run across all its restarts, with the epochs where
//! training was restarted marked (the book's "watch the curves, stop, lower the rate, resume").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::Serialize;

/// Debian's fonts-dejavu-core (installed by scripts/setup.sh); the PNG's text is drawn with it.
pub const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Why a run's curves cannot be read or drawn; every message names the run, the log line or the file.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{}: not a run directory", .0.display())]
    NotRun(PathBuf),
    #[error("{}: no metrics-from-*.jsonl files (has `trainer train` run here?)", .0.display())]
    NoMetrics(PathBuf),
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: not JSON", path.display())]
    NotJson {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}:{line}: no epoch", path.display())]
    NoEpoch { path: PathBuf, line: usize },
    #[error("{}: the plot's font is missing (apt-get install fonts-dejavu-core)", FONT)]
    NoFont(#[source] std::io::Error),
    #[error("{}: not a usable TrueType font", FONT)]
    BadFont,
    #[error("writing {}: {reason}", path.display())]
    Draw { path: PathBuf, reason: String },
}

type Result<T, E = PlotError> = std::result::Result<T, E>;

/// What plotters reports while drawing (its error types are generic over the back end).
type DrawError = Box<dyn std::error::Error + Send + Sync>;

/// One epoch's numbers as the curves need them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_rank1: f64,
    pub val_loss: Option<f64>,
    pub val_rank1: Option<f64>,
    pub val_rank5: Option<f64>,
    /// A detector's validation mAP@0.5, and each class's AP@0.5 (label, AP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_map: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub val_ap: Vec<(String, Option<f64>)>,
}

/// Every epoch of a run, merged over its restarts (a later restart's epoch replaces an earlier one's),
/// and the epochs at which restarts began.
#[derive(Debug, Serialize)]
pub struct History {
    pub points: Vec<Point>,
    pub restarts: Vec<usize>,
}

/// Reads `RUN/metrics-from-NNNN.jsonl`; malformed lines are an error naming the file and line.
pub fn history(run: &Path) -> Result<History> {
    if !run.is_dir() {
        return Err(PlotError::NotRun(run.to_path_buf()));
    }
    let files = crate::run_dir::RunDir::new(run).metrics_logs();
    if files.is_empty() {
        return Err(PlotError::NoMetrics(run.to_path_buf()));
    }
    let mut by_epoch = BTreeMap::new();
    for (_, path) in &files {
        let text = std::fs::read_to_string(path).map_err(|source| PlotError::Read { path: path.clone(), source })?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).map_err(|source| PlotError::NotJson { path: path.clone(), line: i + 1, source })?;
            if v.get("train_loss").is_none() {
                continue; // a per-step line
            }
            let f = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
            let val = |k: &str| v.get("val").and_then(|x| x.get(k)).and_then(serde_json::Value::as_f64);
            let epoch = v["epoch"].as_u64().ok_or_else(|| PlotError::NoEpoch { path: path.clone(), line: i + 1 })? as usize;
            by_epoch.insert(
                epoch,
                Point {
                    epoch,
                    lr: f("lr").unwrap_or(f64::NAN),
                    train_loss: f("train_loss").unwrap_or(f64::NAN),
                    train_rank1: f("train_rank1").unwrap_or(f64::NAN),
                    val_loss: val("loss"),
                    val_rank1: val("rank1"),
                    val_rank5: val("rank5"),
                    val_map: val("map"),
                    val_ap: v
                        .get("val")
                        .and_then(|x| x.get("ap"))
                        .and_then(serde_json::Value::as_array)
                        .map(|a| a.iter().map(|c| (c["label"].as_str().unwrap_or("?").to_string(), c["ap"].as_f64())).collect())
                        .unwrap_or_default(),
                },
            );
        }
    }
    let restarts = files.iter().map(|(s, _)| *s).filter(|&s| s > 0).collect();
    Ok(History { points: by_epoch.into_values().collect(), restarts })
}

fn load_font() -> Result<()> {
    let bytes = std::fs::read(FONT).map_err(PlotError::NoFont)?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice())).map_err(|_| PlotError::BadFont)
}

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// The epoch axis: continuous from 0 to `end` (restart lines sit between epochs), ticked and labelled
/// at whole epochs only. plotters' own f64 axis puts ticks at halves, which `{:.0}` printed as
/// `0 0 1 2 2 3 4 4`.
#[derive(Clone)]
struct EpochAxis {
    end: f64,
    ticks: Vec<f64>,
}

impl Ranged for EpochAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        limit.0 + ((v / self.end) * f64::from(limit.1 - limit.0)).round() as i32
    }
    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let max = hint.max_num_points().max(1);
        let step = self.ticks.len().div_ceil(max).max(1);
        self.ticks.iter().step_by(step).copied().collect()
    }
    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.end
    }
}

impl ValueFormatter<f64> for EpochAxis {
    fn format(v: &f64) -> String {
        format!("{v:.0}")
    }
}

/// Ticks at whole epochs only: every epoch up to 15, else every k-th so that at most about 15 remain.
fn epoch_ticks(last: usize) -> Vec<f64> {
    let last = last.max(1);
    let step = last.div_ceil(15);
    (0..=last).step_by(step).map(|e| e as f64).collect()
}

fn panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
    restarts: &[usize],
    last: usize,
    legend: SeriesLabelPosition,
) -> Result<(), DrawError> {
    let ys: Vec<f64> = series.iter().flat_map(|(_, _, p)| p.iter().map(|(_, y)| *y)).filter(|y| y.is_finite()).collect();
    let (lo, hi) = ys.iter().fold((f64::MAX, f64::MIN), |(a, b), &y| (a.min(y), b.max(y)));
    let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9)) };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(EpochAxis { end: last.max(1) as f64 + 0.5, ticks: epoch_ticks(last) }, lo..hi)?;
    chart.configure_mesh().x_desc("epoch").light_line_style(WHITE.mix(0.0)).draw()?;
    for &r in restarts {
        let x = r as f64 + 0.5;
        chart
            .draw_series(LineSeries::new([(x, lo), (x, hi)], ShapeStyle::from(&BLACK.mix(0.35)).stroke_width(1)))?
            .label(format!("restart after epoch {r}"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.35)));
    }
    for (name, color, pts) in series {
        let pts: Vec<(f64, f64)> = pts.iter().copied().filter(|(_, y)| y.is_finite()).collect();
        if pts.is_empty() {
            continue;
        }
        let c = *color;
        chart
            .draw_series(LineSeries::new(pts.clone(), ShapeStyle::from(&c).stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], ShapeStyle::from(&c).stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).position(legend).draw()?;
    Ok(())
}

/// Draws the run's curves to `out` (PNG) and returns the history drawn.
pub fn plot(run: &Path, out: &Path) -> Result<History> {
    let h = history(run)?;
    load_font()?;
    let last = h.points.last().map_or(1, |p| p.epoch);
    let xs = |f: &dyn Fn(&Point) -> Option<f64>| -> Vec<(f64, f64)> { h.points.iter().filter_map(|p| Some((p.epoch as f64, f(p)?))).collect() };
    let draw = |e: DrawError| PlotError::Draw { path: out.to_path_buf(), reason: e.to_string() };
    let root = BitMapBackend::new(out, (1280, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(e.into()))?;
    let (left, right) = root.split_horizontally(640);
    let loss: Vec<Series> = vec![("train loss", BLUE, xs(&|p| Some(p.train_loss))), ("val loss", RED, xs(&|p| p.val_loss))];
    panel(&left, "loss", &loss, &h.restarts, last, SeriesLabelPosition::UpperRight).map_err(draw)?;
    if h.points.iter().any(|p| p.val_map.is_some()) {
        // a detector: mAP@0.5 and each class's AP@0.5
        let classes: Vec<String> = h.points.iter().rev().find(|p| !p.val_ap.is_empty()).map_or(vec![], |p| p.val_ap.iter().map(|(l, _)| l.clone()).collect());
        let names: Vec<String> = classes.iter().map(|l| format!("AP {l}")).collect();
        let palette = [RGBColor(0, 140, 70), RGBColor(230, 140, 0), RGBColor(140, 60, 200), RGBColor(0, 150, 200), RGBColor(120, 120, 120)];
        let mut acc: Vec<Series> = vec![("val mAP@0.5", RED, xs(&|p| p.val_map))];
        for (k, (class, name)) in classes.iter().zip(&names).enumerate() {
            let per = xs(&|p| p.val_ap.iter().find(|(l, _)| l == class).and_then(|(_, ap)| *ap));
            acc.push((name.as_str(), palette[k % palette.len()], per));
        }
        panel(&right, "mAP@0.5 (validation)", &acc, &h.restarts, last, SeriesLabelPosition::LowerRight).map_err(draw)?;
    } else {
        let acc: Vec<Series> = vec![
            ("train rank-1", BLUE, xs(&|p| Some(p.train_rank1).filter(|v| v.is_finite()))),
            ("val rank-1", RED, xs(&|p| p.val_rank1)),
            ("val rank-5", RGBColor(0, 140, 70), xs(&|p| p.val_rank5)),
        ];
        panel(&right, "accuracy", &acc, &h.restarts, last, SeriesLabelPosition::LowerRight).map_err(draw)?;
    }
    root.present().map_err(|e| draw(e.into()))?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::epoch_ticks;

    #[test]
    fn epoch_ticks_are_whole_distinct_and_few() {
        assert_eq!(epoch_ticks(4), [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(epoch_ticks(0), [0.0, 1.0]);
        for last in [1, 7, 15, 16, 90, 1000] {
            let t = epoch_ticks(last);
            assert!(t.iter().all(|x| x.fract() == 0.0) && t.windows(2).all(|w| w[0] < w[1]), "{last}: {t:?}");
            assert!(t.len() <= 16 && *t.last().unwrap() <= last as f64, "{last}: {t:?}");
        }
    }
}

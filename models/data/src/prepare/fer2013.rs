//! `trainer prepare fer2013`: the Kaggle CSV (`emotion,pixels,Usage`; 2,304 grey values per row;
//! Training → train, PrivateTest → val, PublicTest → test, as the book uses them), optionally merging
//! disgust into angry (the book's 6-class variant: angry, fear, happy, sad, surprise, neutral).

use std::path::PathBuf;

use crate::records::{Item, Source};
use image::{DynamicImage, GrayImage};

use super::error::csv_err;
use super::{PrepareError, Prepared, Split};

pub const FER_LABELS: [&str; 7] = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];

pub struct Fer2013Options {
    pub csv: PathBuf,
    /// The book's 6-class variant: disgust becomes angry.
    pub merge_disgust: bool,
}

/// Reads the CSV row by row; a row that does not parse or holds an unknown emotion or usage is dropped.
pub fn build(o: &Fer2013Options) -> Result<Prepared, PrepareError> {
    // the csv crate, as for Stanford Cars: quoting, CRLF and blank lines are its business, not ours
    let mut rdr = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_path(&o.csv).map_err(csv_err("reading", &o.csv))?;
    let cols: Vec<String> = rdr.headers().map_err(csv_err("reading the header of", &o.csv))?.iter().map(str::to_ascii_lowercase).collect();
    let col = |name: &str| {
        let reason = format!("no '{name}' column in the header");
        cols.iter().position(|c| c == name).ok_or_else(|| PrepareError::Parse { path: o.csv.clone(), line: 1, reason })
    };
    let (ce, cp, cu) = (col("emotion")?, col("pixels")?, col("usage")?);
    let name = o.csv.file_name().map_or("fer2013.csv".into(), |n| n.to_string_lossy().into_owned());
    let (mut train, mut val, mut test, mut dropped, mut read) = (vec![], vec![], vec![], vec![], 0);
    for row in rdr.records() {
        read += 1;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                dropped.push((format!("{name}:{line}"), format!("unreadable CSV record: {e}")));
                continue;
            }
        };
        let at = format!("{name}:{}", row.position().map_or(0, |p| p.line()));
        let Some((e, p, u)) = (row.len() > ce.max(cp).max(cu)).then(|| (&row[ce], &row[cp], &row[cu])) else {
            dropped.push((at, format!("{} fields, expected {}", row.len(), cols.len())));
            continue;
        };
        let Ok(mut label) = e.parse::<i32>() else {
            dropped.push((at, format!("emotion '{e}' is not a number")));
            continue;
        };
        if !(0..7).contains(&label) {
            dropped.push((at, format!("emotion {label} is not in 0..=6")));
            continue;
        }
        let px: Result<Vec<u8>, _> = p.split_whitespace().map(str::parse::<u8>).collect();
        let px = match px {
            Ok(px) if px.len() == 48 * 48 => px,
            Ok(px) => {
                dropped.push((at, format!("{} pixels, expected 2304 (48x48)", px.len())));
                continue;
            }
            Err(_) => {
                dropped.push((at, "pixels are not grey values 0-255".into()));
                continue;
            }
        };
        if o.merge_disgust {
            label = match label {
                0 | 1 => 0,
                other => other - 1,
            };
        }
        let split = match u.to_ascii_lowercase().as_str() {
            "training" => &mut train,
            "privatetest" => &mut val,
            "publictest" => &mut test,
            other => {
                dropped.push((at, format!("usage '{other}' is not Training, PrivateTest or PublicTest")));
                continue;
            }
        };
        let img = GrayImage::from_raw(48, 48, px).expect("2304 pixels");
        split.push(Item { source: Source::Image(DynamicImage::ImageLuma8(img)), key: at, label, boxes: vec![] });
    }
    let labels: Vec<String> = FER_LABELS.iter().filter(|l| !(o.merge_disgust && **l == "disgust")).map(|s| s.to_string()).collect();
    let splits =
        [("train", train), ("val", val), ("test", test)].into_iter().filter(|(_, v)| !v.is_empty()).map(|(n, items)| Split { name: n.into(), items }).collect();
    Ok(Prepared { kind: "fer2013".into(), labels, splits, read, dropped, grayscale: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::write;
    use crate::records::{PackOptions, RecordFile};

    #[test]
    fn fer2013_rows_map_to_splits_and_bad_rows_are_dropped() {
        let scratch = tempfile::tempdir().unwrap();
        let d = scratch.path();
        let px = |v: u8| vec![v.to_string(); 2304].join(" ");
        let csv = format!(
            "emotion,pixels,Usage\n0,{},Training\n1,{},Training\n3,{},PrivateTest\n6,{},PublicTest\n9,{},Training\n2,1 2 3,Training\n4,{},Elsewhere\n",
            px(10),
            px(20),
            px(30),
            px(40),
            px(50),
            px(60)
        );
        let f = d.join("fer2013.csv");
        std::fs::write(&f, csv).unwrap();
        let p = build(&Fer2013Options { csv: f.clone(), merge_disgust: false }).unwrap();
        assert_eq!(p.labels.len(), 7);
        assert_eq!((p.read, p.dropped.len()), (7, 3));
        assert!(p.dropped.iter().any(|(at, why)| at == "fer2013.csv:6" && why.contains("not in 0..=6")), "{:?}", p.dropped);
        assert!(p.dropped.iter().any(|(_, why)| why.contains("3 pixels")));
        let sizes: Vec<(String, usize)> = p.splits.iter().map(|s| (s.name.clone(), s.items.len())).collect();
        assert_eq!(sizes, [("train".into(), 2), ("val".into(), 1), ("test".into(), 1)]);
        let merged = build(&Fer2013Options { csv: f, merge_disgust: true }).unwrap();
        assert_eq!(merged.labels, ["angry", "fear", "happy", "sad", "surprise", "neutral"]);
        let train_labels: Vec<i32> = merged.splits[0].items.iter().map(|i| i.label).collect();
        assert_eq!(train_labels, [0, 0], "disgust merged into angry");
        assert_eq!(merged.splits[2].items[0].label, 5, "neutral shifts from 6 to 5");
        let out = d.join("out");
        let r = write(merged, &out, &PackOptions { short_side: 0, jpeg_quality: 0, grayscale: true }, false).unwrap();
        assert!((r.train_means[0] - 15.0).abs() < 1e-9, "{:?}", r.train_means);
        let rec = RecordFile::open(&out.join("val.rec")).unwrap().read(0).unwrap();
        let img = image::load_from_memory(&rec.image).unwrap();
        assert_eq!((img.width(), img.height(), img.to_luma8().get_pixel(5, 5).0[0]), (48, 48, 30));
    }
}

//! How an image becomes a model's input: read from the exporter's metadata ([`ModelMeta`]) for our own
//! models, or given by flags for models made elsewhere. The flags are a contract shared with edge-demo:
//! `--size WxH --layout nchw|nhwc --gray --mean M[,M,M] --std S[,S,S] --labels FILE`.
//!
//! Two resize policies:
//! - `center`: what training did for validation images. The shorter side is brought down to
//!   `resize_short_side` (never up; Catmull-Rom, as `trainer prepare` stores records), then the centre
//!   `W×H` is cropped (an image smaller than the crop is scaled up to fit). Our exports use this.
//! - `stretch`: the whole image resized to exactly `W×H` (bilinear), as the book does for face crops.
//!   The default for models without metadata.
//!
//! The book's 10-crop oversampling (four corners and the centre, each also mirrored) cuts its crops from
//! the image brought to `resize_short_side` (or, without one, to a short side of 8/7 of the crop's
//! larger side, e.g. 256 for 224), and the model's probabilities over the ten are averaged.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use data::image::{self, imageops::FilterType, DynamicImage, GenericImageView};
use data::records::{short_side_size, shrink_short_side, to_gray};
use data::{Decoded, Transform};
use models::meta::ModelMeta;
pub use models::meta::{Crop, Layout};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;

/// Input size as `WxH` (or one number for a square).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a size: expected WxH, e.g. 224x224 or 64x64");
        let (w, h) = match s.split_once(['x', 'X']) {
            Some((w, h)) => (w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?),
            None => {
                let v = s.trim().parse().map_err(|_| bad())?;
                (v, v)
            }
        };
        if w == 0 || h == 0 {
            return Err(bad());
        }
        Ok(Self { width: w, height: h })
    }
}

/// One value, or one per channel: `M` or `M,M,M`.
#[derive(Debug, Clone, PartialEq)]
pub struct Values(pub Vec<f32>);

impl FromStr for Values {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v: Result<Vec<f32>, _> = s.split(',').map(|x| x.trim().parse::<f32>()).collect();
        match v {
            Ok(v) if !v.is_empty() && (v.len() == 1 || v.len() == 3) => Ok(Self(v)),
            _ => Err(format!("'{s}' is not one value or three comma-separated values")),
        }
    }
}

/// The preprocessing flags shared by `runtime` and `edge-demo`. Each one overrides the model's metadata;
/// a model without metadata needs at least `--size`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PreprocessArgs {
    /// Input size WxH (e.g. 64x64). Required for models without dlcv metadata.
    #[arg(long, value_name = "WxH")]
    pub size: Option<Size>,
    /// Memory order of the input tensor [default: the model's, else nchw].
    #[arg(long, value_enum)]
    pub layout: Option<Layout>,
    /// Feed one grey channel instead of RGB.
    #[arg(long)]
    pub gray: bool,
    /// Mean to subtract, in 0–255 pixel units: one value or one per channel (R,G,B) [default: 0].
    #[arg(long, value_name = "M[,M,M]", allow_hyphen_values = true)]
    pub mean: Option<Values>,
    /// Divisor after the mean, in 0–255 pixel units (255 gives inputs in 0–1) [default: 1].
    #[arg(long, value_name = "S[,S,S]")]
    pub std: Option<Values>,
    /// Class labels, one per line, in output order [default: the model's, else class indices].
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Resize policy [default: the model's, else stretch].
    #[arg(long, value_enum)]
    pub crop: Option<Crop>,
    /// With --crop center: bring the shorter side down to this before cropping (0: no resize).
    #[arg(long, value_name = "PIXELS")]
    pub resize_short: Option<u32>,
}

/// Everything needed to turn a decoded image into one input sample, plus the labels of the outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preprocess {
    pub width: u32,
    pub height: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u32,
    pub layout: Layout,
    /// Per-channel mean and std in 0–255 pixel units (one value per channel).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub crop: Crop,
    /// 0: no resize before the centre crop.
    pub resize_short_side: u32,
    /// Where these settings came from: "metadata", "flags" or "metadata+flags".
    pub source: String,
}

impl Preprocess {
    /// The preprocessing that one of our exports records.
    pub fn from_meta(meta: &ModelMeta) -> Self {
        let p = &meta.preprocessing;
        Self {
            width: p.input[2] as u32,
            height: p.input[1] as u32,
            channels: p.input[0] as u32,
            layout: p.layout,
            mean: p.mean.clone(),
            std: p.std.clone(),
            crop: p.crop,
            resize_short_side: p.resize_short_side,
            source: "metadata".into(),
        }
    }

    /// Metadata (when there is some) with the flags laid over it.
    pub fn resolve(meta: Option<Self>, a: &PreprocessArgs) -> Result<Self, String> {
        let overridden =
            a.size.is_some() || a.layout.is_some() || a.gray || a.mean.is_some() || a.std.is_some() || a.crop.is_some() || a.resize_short.is_some();
        let mut p = match meta {
            Some(mut m) => {
                if overridden {
                    m.source = "metadata+flags".into();
                }
                m
            }
            None => {
                let size = a
                    .size
                    .ok_or("the model has no dlcv metadata: give its preprocessing with --size WxH (and --layout, --gray, --mean, --std as it was trained)")?;
                Self {
                    width: size.width,
                    height: size.height,
                    channels: 3,
                    layout: Layout::Nchw,
                    mean: vec![0.0],
                    std: vec![1.0],
                    crop: Crop::Stretch,
                    resize_short_side: 0,
                    source: "flags".into(),
                }
            }
        };
        if let Some(s) = a.size {
            (p.width, p.height) = (s.width, s.height);
        }
        if let Some(l) = a.layout {
            p.layout = l;
        }
        if a.gray {
            p.channels = 1;
        }
        if let Some(m) = &a.mean {
            p.mean = m.0.clone();
        }
        if let Some(s) = &a.std {
            p.std = s.0.clone();
        }
        if let Some(c) = a.crop {
            p.crop = c;
        }
        if let Some(r) = a.resize_short {
            p.resize_short_side = r;
        }
        let c = p.channels as usize;
        for (name, v) in [("mean", &mut p.mean), ("std", &mut p.std)] {
            match v.len() {
                1 => *v = vec![v[0]; c],
                n if n == c => {}
                n => return Err(format!("--{name} has {n} values for a {c}-channel input")),
            }
        }
        if let Some(s) = p.std.iter().find(|s| **s == 0.0 || !s.is_finite()) {
            return Err(format!("--std {s}: must be a non-zero number"));
        }
        Ok(p)
    }

    /// Floats in one sample.
    pub fn sample_len(&self) -> usize {
        (self.channels * self.width * self.height) as usize
    }

    /// The input tensor's shape for `n` samples.
    pub fn shape(&self, n: usize) -> [usize; 4] {
        let (c, h, w) = (self.channels as usize, self.height as usize, self.width as usize);
        match self.layout {
            Layout::Nchw => [n, c, h, w],
            Layout::Nhwc => [n, h, w, c],
        }
    }

    fn transform(&self) -> Transform {
        Transform::eval([self.height, self.width], self.channels, self.mean.clone(), self.std.clone())
    }

    /// Writes one sample (`sample_len()` floats, in `layout`) for `img` into `out`.
    pub fn apply(&self, img: DynamicImage, out: &mut [f32]) {
        let img = self.to_channels(img);
        let img = match self.crop {
            Crop::Stretch => img.resize_exact(self.width, self.height, FilterType::Triangle),
            Crop::Center => shrink_short_side(img, self.resize_short_side),
        };
        self.normalise(&img, out);
    }

    /// [`Preprocess::apply`] on decoded pixels (as [`data::Decoder`] writes them). When no
    /// resize is due (a centre crop of an image whose shorter side needs no shrinking, in the channels
    /// the model takes) the crop is sampled straight from `px` in one pass, as the training loader does;
    /// otherwise the pixels go through the resize of `apply`. Either way the result is `apply`'s.
    pub fn apply_decoded(&self, px: &Decoded<'_>, out: &mut [f32]) {
        let (w, h) = (px.width as u32, px.height as u32);
        let no_resize = self.crop == Crop::Center && short_side_size(w, h, self.resize_short_side) == (w, h);
        let readable = matches!((self.channels, px.bytes_per_pixel), (1, 1) | (3, 3) | (3, 4));
        if no_resize && readable {
            self.sample(px, out);
        } else {
            self.apply(to_image(px), out);
        }
    }

    /// Writes the ten crops (corners, centre, then the same five mirrored) as ten consecutive samples.
    pub fn apply_ten_crop(&self, img: DynamicImage, out: &mut [f32]) {
        let img = self.to_channels(img);
        let base = match (self.crop, self.resize_short_side) {
            (Crop::Center, s) if s > 0 => s,
            _ => (self.width.max(self.height) * 8).div_ceil(7),
        };
        let (w, h) = img.dimensions();
        let scale = base as f64 / w.min(h) as f64;
        let (nw, nh) = (((w as f64 * scale).round() as u32).max(self.width), ((h as f64 * scale).round() as u32).max(self.height));
        let img = if (nw, nh) == (w, h) { img } else { img.resize_exact(nw, nh, FilterType::CatmullRom) };
        let (dx, dy) = (nw - self.width, nh - self.height);
        let corners = [(0, 0), (dx, 0), (0, dy), (dx, dy), (dx / 2, dy / 2)];
        let n = self.sample_len();
        for (i, chunk) in out.chunks_exact_mut(n).take(10).enumerate() {
            let (x, y) = corners[i % 5];
            let mut window = DynamicImage::ImageRgba8(img.view(x, y, self.width, self.height).to_image());
            if i >= 5 {
                window = window.fliph();
            }
            self.normalise(&self.to_channels(window), chunk);
        }
    }

    fn to_channels(&self, img: DynamicImage) -> DynamicImage {
        if self.channels == 1 {
            DynamicImage::ImageLuma8(to_gray(&img))
        } else {
            DynamicImage::ImageRgb8(img.into_rgb8())
        }
    }

    /// Centre-crops `img` (already in the model's channels) to `W×H` (scaling it up if too small),
    /// normalises it and writes it in `layout`.
    fn normalise(&self, img: &DynamicImage, out: &mut [f32]) {
        let (w, h) = img.dimensions();
        self.sample(&Decoded { pixels: img.as_bytes(), width: w as usize, height: h as usize, bytes_per_pixel: self.channels as usize, x: 0, y: 0 }, out);
    }

    /// The centre crop of `px` (scaled up if too small), normalised, written in `layout` (NCHW: in
    /// place; NHWC: through a per-thread scratch buffer, transposed).
    fn sample(&self, px: &Decoded<'_>, out: &mut [f32]) {
        let fill = |chw: &mut [f32]| {
            let mut rng = SmallRng::seed_from_u64(0); // the eval transform draws nothing
            self.transform().apply_interleaved(px.pixels, px.width, px.height, px.bytes_per_pixel, &mut rng, chw)
        };
        if self.layout == Layout::Nchw {
            return fill(out);
        }
        thread_local! {
            static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        SCRATCH.with(|s| {
            let mut chw = s.borrow_mut();
            chw.resize(self.sample_len(), 0.0);
            fill(&mut chw);
            let (c, plane) = (self.channels as usize, (self.width * self.height) as usize);
            for (p, px) in out.chunks_exact_mut(c).take(plane).enumerate() {
                for (k, v) in px.iter_mut().enumerate() {
                    *v = chw[k * plane + p];
                }
            }
        })
    }
}

/// Decoded pixels as an image (padding bytes dropped).
pub fn to_image(px: &Decoded<'_>) -> DynamicImage {
    let (w, h) = (px.width as u32, px.height as u32);
    let bytes = &px.pixels[..px.width * px.height * px.bytes_per_pixel];
    let img = match px.bytes_per_pixel {
        1 => image::GrayImage::from_raw(w, h, bytes.to_vec()).map(DynamicImage::ImageLuma8),
        3 => image::RgbImage::from_raw(w, h, bytes.to_vec()).map(DynamicImage::ImageRgb8),
        _ => image::RgbImage::from_raw(w, h, bytes.chunks_exact(px.bytes_per_pixel).flat_map(|p| [p[0], p[1], p[2]]).collect()).map(DynamicImage::ImageRgb8),
    };
    img.expect("the slice holds exactly width * height pixels")
}

impl fmt::Display for Preprocess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ch = if self.channels == 1 { "gray" } else { "rgb" };
        write!(f, "{}x{} {ch} {}, mean {:?} std {:?}, ", self.width, self.height, self.layout, self.mean, self.std)?;
        match self.crop {
            Crop::Stretch => write!(f, "stretch")?,
            Crop::Center if self.resize_short_side > 0 => write!(f, "short side {} then centre crop", self.resize_short_side)?,
            Crop::Center => write!(f, "centre crop")?,
        }
        write!(f, " (from {})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use data::image::{GrayImage, Luma, Rgb, RgbImage};

    fn flags(size: &str) -> PreprocessArgs {
        PreprocessArgs { size: Some(size.parse().unwrap()), ..Default::default() }
    }

    #[test]
    fn parses_sizes_and_values() {
        assert_eq!("64x48".parse::<Size>().unwrap(), Size { width: 64, height: 48 });
        assert_eq!("32".parse::<Size>().unwrap(), Size { width: 32, height: 32 });
        for bad in ["0x4", "ax4", "4x", ""] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
        assert_eq!("127.5".parse::<Values>().unwrap().0, vec![127.5]);
        assert_eq!("1,2,3".parse::<Values>().unwrap().0, vec![1.0, 2.0, 3.0]);
        assert!("1,2".parse::<Values>().is_err());
    }

    #[test]
    fn flags_need_a_size_without_metadata_and_override_it_with() {
        let e = Preprocess::resolve(None, &PreprocessArgs::default()).unwrap_err();
        assert!(e.contains("--size"), "{e}");
        let pre = models::meta::Preprocessing {
            input: [3, 32, 32],
            layout: Layout::Nchw,
            mean: vec![1.0, 2.0, 3.0],
            std: vec![4.0, 5.0, 6.0],
            resize_short_side: 36,
            crop: Crop::Center,
        };
        let m = Preprocess::from_meta(&ModelMeta::new("mini-vgg", models::meta::Task::Classification, vec![], pre));
        assert_eq!((m.width, m.channels, m.resize_short_side, m.crop), (32, 3, 36, Crop::Center));
        let p = Preprocess::resolve(Some(m.clone()), &PreprocessArgs::default()).unwrap();
        assert_eq!((p.mean.clone(), p.source.as_str()), (vec![1.0, 2.0, 3.0], "metadata"));
        let a = PreprocessArgs { mean: Some(Values(vec![9.0])), layout: Some(Layout::Nhwc), ..Default::default() };
        let p = Preprocess::resolve(Some(m), &a).unwrap();
        assert_eq!((p.mean, p.layout, p.source.as_str()), (vec![9.0; 3], Layout::Nhwc, "metadata+flags"));
        let a = PreprocessArgs { gray: true, mean: Some(Values(vec![1.0, 2.0, 3.0])), ..flags("8x8") };
        assert!(Preprocess::resolve(None, &a).unwrap_err().contains("3 values for a 1-channel"));
    }

    #[test]
    fn stretch_nhwc_gray_matches_a_hand_computed_sample() {
        // 2x2 grey image stretched to 2x2 is itself: (v - 127.5) / 127.5, row-major, one channel.
        let img = GrayImage::from_fn(2, 2, |x, y| Luma([(x * 100 + y * 50) as u8]));
        let a = PreprocessArgs { gray: true, layout: Some(Layout::Nhwc), mean: Some(Values(vec![127.5])), std: Some(Values(vec![127.5])), ..flags("2x2") };
        let p = Preprocess::resolve(None, &a).unwrap();
        let mut out = vec![0f32; 4];
        p.apply(DynamicImage::ImageLuma8(img), &mut out);
        let want: Vec<f32> = [0.0, 100.0, 50.0, 150.0].iter().map(|v| (v - 127.5) / 127.5).collect();
        // (v - mean) * (1 / std): equal to (v - mean) / std within one rounding
        assert!(out.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6), "{out:?} vs {want:?}");
        assert_eq!(p.shape(5), [5, 2, 2, 1]);
    }

    #[test]
    fn nhwc_is_the_transpose_of_nchw() {
        let img = RgbImage::from_fn(6, 5, |x, y| Rgb([(x * 40) as u8, (y * 50) as u8, (x * y * 7) as u8]));
        let nchw = Preprocess::resolve(None, &PreprocessArgs { crop: Some(Crop::Center), ..flags("4x3") }).unwrap();
        let nhwc = Preprocess { layout: Layout::Nhwc, ..nchw.clone() };
        let (mut a, mut b) = (vec![0f32; 36], vec![0f32; 36]);
        nchw.apply(DynamicImage::ImageRgb8(img.clone()), &mut a);
        nhwc.apply(DynamicImage::ImageRgb8(img), &mut b);
        for c in 0..3 {
            for p in 0..12 {
                assert_eq!(a[c * 12 + p], b[p * 3 + c]);
            }
        }
        // centre 4x3 crop of 6x5 starts at (1, 1): first red value is x=1 → 40
        assert_eq!(a[0], 40.0);
    }

    #[test]
    fn decoded_pixels_give_what_the_image_path_gives() {
        // 9x7 RGB; every combination of layout, channels, crop and short side, from 3- and 4-byte pixels
        let img = RgbImage::from_fn(9, 7, |x, y| Rgb([(x * 25) as u8, (y * 30 + x) as u8, (200 - x * y * 3) as u8]));
        let rgbx: Vec<u8> = img.pixels().flat_map(|p| [p[0], p[1], p[2], 99]).collect();
        for (layout, gray, crop, short) in [
            (Layout::Nchw, false, Crop::Center, 0),
            (Layout::Nhwc, false, Crop::Center, 0),
            (Layout::Nchw, false, Crop::Center, 6), // shrinks first: goes through the image path
            (Layout::Nhwc, true, Crop::Center, 0),
            (Layout::Nchw, false, Crop::Stretch, 0),
        ] {
            let a = PreprocessArgs { gray, layout: Some(layout), crop: Some(crop), resize_short: Some(short), mean: Some(Values(vec![10.0])), ..flags("5x4") };
            let p = Preprocess::resolve(None, &a).unwrap();
            let mut want = vec![0f32; p.sample_len()];
            p.apply(DynamicImage::ImageRgb8(img.clone()), &mut want);
            let decoded = if gray { to_gray(&DynamicImage::ImageRgb8(img.clone())).into_raw() } else { img.as_raw().clone() };
            for (bytes, bpp) in [(&decoded, if gray { 1 } else { 3 }), (&rgbx, 4)] {
                if gray && bpp == 4 {
                    continue;
                }
                let mut got = vec![f32::NAN; p.sample_len()];
                p.apply_decoded(&Decoded { pixels: bytes, width: 9, height: 7, bytes_per_pixel: bpp, x: 0, y: 0 }, &mut got);
                assert_eq!(got, want, "{layout:?} gray {gray} {crop:?} short {short}, {bpp}-byte pixels");
            }
        }
    }

    #[test]
    fn ten_crop_takes_corners_centre_and_mirrors() {
        // 10x10 grey image whose value encodes the position; crops 8x8 with no resize (base = 10).
        let img = GrayImage::from_fn(10, 10, |x, y| Luma([(y * 10 + x) as u8]));
        let a = PreprocessArgs { gray: true, crop: Some(Crop::Center), resize_short: Some(10), ..flags("8x8") };
        let p = Preprocess::resolve(None, &a).unwrap();
        let mut out = vec![0f32; 640];
        p.apply_ten_crop(DynamicImage::ImageLuma8(img), &mut out);
        let first = |i: usize| out[i * 64];
        // top-left (0,0), top-right (2,0), bottom-left (0,2), bottom-right (2,2), centre (1,1)
        assert_eq!([first(0), first(1), first(2), first(3), first(4)], [0.0, 2.0, 20.0, 22.0, 11.0]);
        // mirrors: the first pixel of a mirrored crop is the last of its row
        assert_eq!([first(5), first(6), first(9)], [7.0, 9.0, 18.0]);
    }
}

//! Stored images (JPEG, PNG, …) into pixels: libjpeg-turbo for JPEGs, the `image` crate for the rest.

use crate::records::to_gray;

/// Decoded pixels, borrowed from the [`Decoder`] that wrote them: `height` rows of `width` pixels of
/// `bytes_per_pixel` bytes (1: grey; 3: RGB; 4: RGB and a padding byte), ready for
/// [`Transform::apply_interleaved`]; the window of the stored image at (`x`, `y`) when only a window
/// was decoded ([`Decoder::decode_window`]), else the whole image at (0, 0).
#[derive(Debug)]
pub struct Decoded<'a> {
    pub pixels: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub bytes_per_pixel: usize,
    pub x: usize,
    pub y: usize,
}

/// The part of a stored image that a transform reads (see [`Decoder::decode_window`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

/// Decodes stored images into one reused pixel buffer, straight into the channels the transform reads.
///
/// JPEGs go to libjpeg-turbo (the `turbojpeg` feature, on by default; libjpeg-turbo 3.1, built from
/// the source the `turbojpeg-sys` crate ships), which can decode only the window a crop reads. Every
/// other format, and any JPEG that libjpeg-turbo refuses (a CMYK file, a damaged or truncated one),
/// goes to the `image` crate, which decides as it always has: what it cannot decode either is an
/// error, and the loader skips and reports that record. Grey output is BT.601 luma everywhere, as
/// OpenCV and PIL make it ([`crate::records::to_gray`]): from a colour JPEG it is the file's own Y
/// channel, which libjpeg-turbo hands over without decoding the colour at all.
#[derive(Default)]
pub struct Decoder {
    #[cfg(feature = "turbojpeg")]
    turbo: Option<crate::tj3::Tj3>,
    pixels: Vec<u8>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("buffer_bytes", &self.pixels.capacity()).finish_non_exhaustive()
    }
}

/// Where decoded pixels lie in `Decoder::pixels`: width, height, bytes per pixel, x, y.
type Placed = (usize, usize, usize, usize, usize);

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes all of `encoded` into 1 (grey) or 3 (RGB) channels.
    pub fn decode(&mut self, encoded: &[u8], channels: u32) -> Result<Decoded<'_>, String> {
        self.decode_window(encoded, channels, |_, _| None)
    }

    /// Decodes `encoded` into 1 (grey) or 3 (RGB) channels; `want` is told the stored image's width
    /// and height (once, before any pixel is decoded, whatever the format) and answers the window the
    /// caller will read, or `None` for all of it. A JPEG is then decoded from the window's top row to
    /// its bottom row and from the iMCU column at or left of its left edge to its right edge (what
    /// libjpeg-turbo can crop to): the returned [`Decoded`] says where that lies. Other formats, and
    /// JPEGs that cannot be decoded in part (or do not end with an end-of-image marker), come whole.
    /// The window's pixels are the same as a whole decode's.
    pub fn decode_window(&mut self, encoded: &[u8], channels: u32, want: impl FnOnce(usize, usize) -> Option<Window>) -> Result<Decoded<'_>, String> {
        let grey = channels == 1;
        // the size `want` was told, by the JPEG header
        let told = std::cell::Cell::new(None);
        let mut want = Some(|w, h| {
            told.set(Some((w, h)));
            want(w, h)
        });
        #[cfg(feature = "turbojpeg")]
        if encoded.starts_with(&[0xFF, 0xD8]) {
            if let Some((width, height, bytes_per_pixel, x, y)) = self.decode_jpeg(encoded, grey, &mut want) {
                return Ok(Decoded { pixels: &self.pixels[..width * height * bytes_per_pixel], width, height, bytes_per_pixel, x, y });
            }
        }
        let img = image::load_from_memory(encoded).map_err(|e| e.to_string())?;
        let (width, height) = (img.width() as usize, img.height() as usize);
        if width == 0 || height == 0 {
            return Err(format!("the image is {width}x{height} pixels"));
        }
        match want.take() {
            Some(want) => _ = want(width, height),
            // libjpeg-turbo read a header, told `want` its size and then refused the file: the image
            // crate must agree on the size the crop was placed in
            None if told.get() != Some((width, height)) => {
                let (w, h) = told.get().unwrap_or_default();
                return Err(format!("libjpeg-turbo read {w}x{h} from the JPEG header, the image crate decoded {width}x{height} pixels"));
            }
            None => {}
        }
        self.pixels = if grey { to_gray(&img).into_raw() } else { img.into_rgb8().into_raw() };
        let bytes_per_pixel = if grey { 1 } else { 3 };
        Ok(Decoded { pixels: &self.pixels, width, height, bytes_per_pixel, x: 0, y: 0 })
    }

    /// libjpeg-turbo into `self.pixels`: RGBX for colour (four-byte pixels sample faster than three),
    /// grey from a grey JPEG or from a YCbCr one's Y channel; the window `want` asks for when it can.
    /// `None` when libjpeg-turbo cannot or will not: the caller falls back (and asks `want` itself if
    /// it was not asked here).
    #[cfg(feature = "turbojpeg")]
    fn decode_jpeg(&mut self, encoded: &[u8], grey: bool, want: &mut Option<impl FnOnce(usize, usize) -> Option<Window>>) -> Option<Placed> {
        use crate::tj3::{Format, Region, Tj3};
        let turbo = match &mut self.turbo {
            Some(t) => t,
            none => none.insert(Tj3::new().ok()?),
        };
        let head = turbo.header(encoded).ok()?;
        if grey && !head.luma {
            return None; // grey straight from the file only where it is the Y (BT.601 luma) channel
        }
        let format = if grey { Format::Grey } else { Format::Rgbx };
        let bytes_per_pixel = format.bytes_per_pixel();
        if head.width.checked_mul(head.height)?.checked_mul(bytes_per_pixel)? > 512 << 20 {
            return None; // past the image crate's default limit: let it refuse the image
        }
        let window = (want.take()?)(head.width, head.height);
        // A cropped decode never reads the rows below the window, so a file cut short there would
        // decode without the warning a whole decode gives (and so differently from epoch to epoch):
        // only a file that ends where a JPEG ends (EOI) is decoded in part.
        let complete = encoded.ends_with(&[0xFF, 0xD9]);
        let region = window.zip(head.mcu_width).filter(|_| complete).and_then(|(w, mcu)| {
            let (x1, y1) = (w.x.checked_add(w.width)?, w.y.checked_add(w.height)?);
            let inside = w.width > 0 && w.height > 0 && x1 <= head.width && y1 <= head.height;
            // libjpeg-turbo upsamples a cropped decode's chroma as if the region's left and right
            // edges were the image's, which changes the pixel or two next to them. A margin of half an
            // iMCU (several chroma samples of every subsampling; one pixel is enough for 4:2:0, as the
            // tests find) on each side keeps the window's own pixels those of a whole decode; on the
            // left, the region starts at the iMCU boundary at or before that margin, as it must
            let margin = mcu / 2;
            let x = w.x.saturating_sub(margin) / mcu * mcu;
            let right = (x1 + margin).min(head.width);
            inside.then_some(Region { x, y: w.y, width: right - x, height: w.height })
        });
        if let Some(r) = region {
            let len = r.width * r.height * bytes_per_pixel;
            grow(&mut self.pixels, len);
            if turbo.decode(encoded, region, format, &mut self.pixels[..len], &head).is_ok() {
                return Some((r.width, r.height, bytes_per_pixel, r.x, r.y));
            }
            // a file libjpeg-turbo will not decode in part is decoded whole, by the same decoder
            turbo.header(encoded).ok()?;
        }
        let len = head.width * head.height * bytes_per_pixel;
        grow(&mut self.pixels, len);
        turbo.decode(encoded, None, format, &mut self.pixels[..len], &head).ok()?;
        Some((head.width, head.height, bytes_per_pixel, 0, 0))
    }
}

#[cfg(feature = "turbojpeg")]
fn grow(pixels: &mut Vec<u8>, len: usize) {
    if pixels.len() < len {
        pixels.resize(len, 0);
    }
}

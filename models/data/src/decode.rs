//! Stored images (JPEG, PNG, …) into pixels: libjpeg-turbo for JPEGs, the `image` crate for the rest.

use crate::records::to_gray;

/// Decoded pixels, borrowed from the [`Decoder`] that wrote them: `height` rows of `width` pixels of
/// `bytes_per_pixel` bytes (1: grey; 3: RGB; 4: RGB and a padding byte), ready for
/// [`Transform::apply_interleaved`].
#[derive(Debug)]
pub struct Decoded<'a> {
    pub pixels: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub bytes_per_pixel: usize,
}

/// Decodes stored images into one reused pixel buffer, straight into the channels the transform reads.
///
/// JPEGs go to libjpeg-turbo (the `turbojpeg` feature, on by default; it links the system's
/// libturbojpeg). Every other format, and any JPEG that libjpeg-turbo refuses (a CMYK file, a damaged or
/// truncated one), goes to the `image` crate, which decides as it always has: what it cannot decode
/// either is an error, and the loader skips and reports that record. Grey output is BT.601 luma
/// everywhere, as OpenCV and PIL make it ([`crate::records::to_gray`]): from a colour JPEG it is the
/// file's own Y channel, which libjpeg-turbo hands over without decoding the colour at all.
#[derive(Default)]
pub struct Decoder {
    #[cfg(feature = "turbojpeg")]
    turbo: Option<turbojpeg::Decompressor>,
    pixels: Vec<u8>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("buffer_bytes", &self.pixels.capacity()).finish_non_exhaustive()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `encoded` into 1 (grey) or 3 (RGB) channels.
    pub fn decode(&mut self, encoded: &[u8], channels: u32) -> Result<Decoded<'_>, String> {
        let grey = channels == 1;
        #[cfg(feature = "turbojpeg")]
        if encoded.starts_with(&[0xFF, 0xD8]) {
            if let Some((width, height, bytes_per_pixel)) = self.decode_jpeg(encoded, grey) {
                return Ok(Decoded { pixels: &self.pixels[..width * height * bytes_per_pixel], width, height, bytes_per_pixel });
            }
        }
        let img = image::load_from_memory(encoded).map_err(|e| e.to_string())?;
        let (width, height) = (img.width() as usize, img.height() as usize);
        if width == 0 || height == 0 {
            return Err(format!("the image is {width}x{height} pixels"));
        }
        self.pixels = if grey { to_gray(&img).into_raw() } else { img.into_rgb8().into_raw() };
        let bytes_per_pixel = if grey { 1 } else { 3 };
        Ok(Decoded { pixels: &self.pixels, width, height, bytes_per_pixel })
    }

    /// libjpeg-turbo into `self.pixels`: RGBX for colour (four-byte pixels sample faster than three),
    /// grey from a grey JPEG or from a YCbCr one's Y channel. `None` when libjpeg-turbo cannot or will
    /// not: the caller falls back.
    #[cfg(feature = "turbojpeg")]
    fn decode_jpeg(&mut self, encoded: &[u8], grey: bool) -> Option<(usize, usize, usize)> {
        use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat};
        let turbo = match &mut self.turbo {
            Some(t) => t,
            none => none.insert(Decompressor::new().ok()?),
        };
        let head = turbo.read_header(encoded).ok()?;
        if grey && !matches!(head.colorspace, Colorspace::Gray | Colorspace::YCbCr) {
            return None; // grey straight from the file only where it is the Y (BT.601 luma) channel
        }
        let (width, height) = (head.width, head.height);
        let (format, bytes_per_pixel) = if grey { (PixelFormat::GRAY, 1) } else { (PixelFormat::RGBX, 4) };
        let len = width.checked_mul(height)?.checked_mul(bytes_per_pixel)?;
        if len > 512 << 20 {
            return None; // past the image crate's default limit: let it refuse the image
        }
        if self.pixels.len() < len {
            self.pixels.resize(len, 0);
        }
        let out = Image { pixels: &mut self.pixels[..len], width, pitch: width * bytes_per_pixel, height, format };
        turbo.decompress(encoded, out).ok()?;
        Some((width, height, bytes_per_pixel))
    }
}

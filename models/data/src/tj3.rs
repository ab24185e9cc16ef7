//! libjpeg-turbo's TurboJPEG 3 API, the few calls the loader's [`crate::decode::Decoder`] makes:
//! read a header, then decode the whole image or only a window of it into RGBX or grey.
//!
//! Decoding a window (`tj3SetCroppingRegion`: columns outside it are never inverse-transformed or
//! colour-converted, rows below it are never read, rows above it only entropy-decoded) is what makes
//! a 224 crop of a 256-pixel image cheaper than decoding it all, as DALI's `decoders.image_crop`
//! does. The safe `turbojpeg` crate has no binding for it, hence these raw calls on the
//! `turbojpeg-sys` bindings (which build libjpeg-turbo 3.1 from the source the crate ships). This is
//! the data crate's only `unsafe` module.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_void, CStr};
use std::ptr::NonNull;

use turbojpeg_sys as tj;

/// The iMCU width in pixels of each TJSAMP value (4:4:4, 4:2:2, 4:2:0, grey, 4:4:0, 4:1:1, 4:4:1):
/// turbojpeg.h's `tjMCUWidth`, a `static` table there, so no symbol to link to.
const MCU_WIDTH: [usize; 7] = [8, 16, 16, 8, 8, 32, 8];

/// One TurboJPEG decompressor instance.
pub(crate) struct Tj3 {
    handle: NonNull<c_void>,
}

// SAFETY: a TurboJPEG instance holds no thread-local state; it may move between threads as long as
// one thread uses it at a time, which `&mut self` on every call guarantees (it is not `Sync`).
unsafe impl Send for Tj3 {}

/// What a JPEG's header says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub width: usize,
    pub height: usize,
    /// The width of an iMCU in pixels, which a window's left edge must be a multiple of (`None`
    /// for an unusual subsampling, which cannot be decoded in part).
    pub mcu_width: Option<usize>,
    /// The file stores Y (and maybe CbCr) or plain grey: grey can be read straight from it.
    pub luma: bool,
}

/// The pixels to decode: RGBX (4 bytes, the 4th unset) or grey (1 byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Rgbx,
    Grey,
}

impl Format {
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            Format::Rgbx => 4,
            Format::Grey => 1,
        }
    }
}

/// A rectangle of the stored image: its left edge a multiple of the header's `mcu_width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub x: usize,
    pub y: usize,
    pub width: usize,
    pub height: usize,
}

impl Tj3 {
    pub fn new() -> Result<Self, String> {
        // SAFETY: no arguments but the init type; a null result is checked.
        let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        NonNull::new(handle).map(|handle| Self { handle }).ok_or_else(|| "libjpeg-turbo: cannot create a decompressor".to_string())
    }

    fn error(&self) -> String {
        // SAFETY: a live handle; the string it returns is owned by the instance and copied at once.
        let msg = unsafe { tj::tj3GetErrorStr(self.handle.as_ptr()) };
        if msg.is_null() {
            return "libjpeg-turbo failed".into();
        }
        // SAFETY: non-null, NUL-terminated (libjpeg-turbo's own message buffer).
        unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned()
    }

    fn get(&self, param: tj::TJPARAM) -> c_int {
        // SAFETY: a live handle and one of the header parameters.
        unsafe { tj::tj3Get(self.handle.as_ptr(), param as c_int) }
    }

    /// Reads `jpeg`'s header. [`Tj3::decode`] must be given the same bytes next.
    pub fn header(&mut self, jpeg: &[u8]) -> Result<Header, String> {
        // SAFETY: the pointer and length describe `jpeg`, which libjpeg-turbo only reads.
        if unsafe { tj::tj3DecompressHeader(self.handle.as_ptr(), jpeg.as_ptr(), jpeg.len() as tj::size_t) } != 0 {
            return Err(self.error());
        }
        let (width, height) = (self.get(tj::TJPARAM_TJPARAM_JPEGWIDTH), self.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT));
        if width <= 0 || height <= 0 {
            return Err(format!("the JPEG header says {width}x{height} pixels"));
        }
        let subsamp = self.get(tj::TJPARAM_TJPARAM_SUBSAMP);
        let mcu_width = usize::try_from(subsamp).ok().and_then(|s| MCU_WIDTH.get(s).copied());
        let cs = self.get(tj::TJPARAM_TJPARAM_COLORSPACE);
        let luma = cs == tj::TJCS_TJCS_GRAY as c_int || cs == tj::TJCS_TJCS_YCbCr as c_int;
        Ok(Header { width: width as usize, height: height as usize, mcu_width, luma })
    }

    /// Decodes the image whose header was just read (the whole of it, or `region`) into `out`,
    /// `region`'s (or the image's) width × height pixels of `format`, rows packed. A warning (a
    /// truncated or damaged file) is an error too: the caller decides what to do with such a file.
    pub fn decode(&mut self, jpeg: &[u8], region: Option<Region>, format: Format, out: &mut [u8], header: &Header) -> Result<(), String> {
        let (w, h) = region.map_or((header.width, header.height), |r| (r.width, r.height));
        let pitch = w * format.bytes_per_pixel();
        assert!(out.len() >= pitch * h, "{w}x{h} pixels do not fit in {} bytes", out.len());
        let r = match region {
            Some(r) => {
                assert!(r.x + r.width <= header.width && r.y + r.height <= header.height, "{r:?} lies outside {header:?}");
                tj::tjregion { x: r.x as c_int, y: r.y as c_int, w: r.width as c_int, h: r.height as c_int }
            }
            None => tj::tjregion { x: 0, y: 0, w: 0, h: 0 }, // TJUNCROPPED
        };
        // SAFETY: a live handle whose header was read; the region is checked above (and again by
        // libjpeg-turbo, which refuses a misaligned one).
        if unsafe { tj::tj3SetCroppingRegion(self.handle.as_ptr(), r) } != 0 {
            return Err(self.error());
        }
        let pf = match format {
            Format::Rgbx => tj::TJPF_TJPF_RGBX,
            Format::Grey => tj::TJPF_TJPF_GRAY,
        };
        // SAFETY: `jpeg` is read only; `out` holds at least pitch * h bytes (asserted), which is what
        // libjpeg-turbo writes for a w x h image of this pixel format at this pitch.
        let rc = unsafe { tj::tj3Decompress8(self.handle.as_ptr(), jpeg.as_ptr(), jpeg.len() as tj::size_t, out.as_mut_ptr(), pitch as c_int, pf as c_int) };
        if rc != 0 {
            return Err(self.error());
        }
        Ok(())
    }
}

impl Drop for Tj3 {
    fn drop(&mut self) {
        // SAFETY: destroyed once; the handle is not used after.
        unsafe { tj::tj3Destroy(self.handle.as_ptr()) }
    }
}

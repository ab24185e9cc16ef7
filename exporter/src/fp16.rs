//! IEEE 754 binary16 (ONNX `FLOAT16`) conversions for `--fp16` exports, from the `half` crate (already
//! in the dependency tree through safetensors' users; well kept, and with hardware conversion where the
//! CPU has it). The rounding is part of what an fp16 export promises (round to nearest, ties to even,
//! as numpy's `astype(float16)` and torch's `.half()` do), so the tests below pin it down exhaustively.

/// The largest finite float16 value.
pub const MAX: f32 = 65504.0;

/// The nearest float16 to `x` (ties to even), as its bit pattern. Values beyond ±65504 (after
/// rounding) become ±infinity, values below half the smallest subnormal (2^-25) become ±0; NaN stays NaN.
pub fn from_f32(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// The float32 value of a float16 bit pattern (exact: every float16 is a float32).
pub fn to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let cases: [(f32, u16); 14] = [
            (0.0, 0x0000),
            (-0.0, 0x8000),
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (0.1, 0x2e66),       // 0.0999755859375 is nearest
            (1.0 / 3.0, 0x3555), // 0.333251953125
            (MAX, 0x7bff),
            (65519.0, 0x7bff), // below the midpoint to 65536
            (65520.0, 0x7c00), // the midpoint rounds to even: infinity
            (f32::INFINITY, 0x7c00),
            (2f32.powi(-14), 0x0400), // smallest normal
            (2f32.powi(-24), 0x0001), // smallest subnormal
            (2f32.powi(-25), 0x0000), // half of it: ties to even (zero)
            (1.5 * 2f32.powi(-25), 0x0001),
        ];
        for (x, h) in cases {
            assert_eq!(from_f32(x), h, "{x:e} -> {:#06x}, expected {h:#06x}", from_f32(x));
        }
        assert!(to_f32(from_f32(f32::NAN)).is_nan());
        assert_eq!(to_f32(0x3555), 0.333_251_95);
    }

    #[test]
    fn every_float16_round_trips_and_every_midpoint_rounds_to_even() {
        for h in 0..=u16::MAX {
            let x = to_f32(h);
            if x.is_nan() {
                assert!(from_f32(x) & 0x7c00 == 0x7c00 && from_f32(x) & 0x3ff != 0, "{h:#06x}");
                continue;
            }
            assert_eq!(from_f32(x), h, "{h:#06x} = {x:e}");
            // the midpoint to the next float16 of the same sign (all exact in float32)
            let next = h + 1;
            if h & 0x7fff >= 0x7bff || next & 0x7fff == 0 {
                continue;
            }
            let y = to_f32(next);
            let mid = (x as f64 + y as f64) / 2.0;
            let mid32 = mid as f32;
            assert_eq!(mid32 as f64, mid, "midpoint of {h:#06x} is exact in float32");
            let even = if h & 1 == 0 { h } else { next };
            assert_eq!(from_f32(mid32), even, "midpoint of {h:#06x} and {next:#06x}");
            // just above and below the midpoint round away from it
            let above = f32::from_bits(mid32.to_bits() + 1);
            let below = f32::from_bits(mid32.to_bits() - 1);
            assert_eq!(from_f32(above), next, "above the midpoint of {h:#06x}");
            assert_eq!(from_f32(below), h, "below the midpoint of {h:#06x}");
        }
    }
}

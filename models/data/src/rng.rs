//! The one generator behind every fixed pseudo-random input of the toolchain: the parity check's
//! inputs, the benchmark's batch, the tests' synthetic images. Marsaglia's xorshift64 (shifts 13, 7,
//! 17): not a generator for statistics (`rand` is), but three lines of integer arithmetic whose sequence
//! is the same on every machine and in every version of every dependency, so an input described once
//! ("4 fixed pseudo-random images") can be made again anywhere.

/// The xorshift64 generator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xorshift64 {
    state: u64,
}

/// 2^64 / φ: multiplying by it spreads small seeds over the state space.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Xorshift64 {
    /// The generator in state `seed` (0, the one state xorshift never leaves, is taken as 1).
    pub fn new(seed: u64) -> Self {
        Self { state: seed.max(1) }
    }

    /// A generator for a small seed (0, 1, 2, …): the seed is spread over the state space first, so
    /// that neighbouring seeds give unrelated streams from their first value on.
    pub fn seeded(seed: u64) -> Self {
        Self::new(seed.wrapping_mul(GOLDEN) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut s = self.state;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.state = s;
        s
    }

    /// A number below `n` (by remainder: the tiny bias of `2^64 mod n` does not matter for inputs).
    ///
    /// # Panics
    /// When `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A float in [0, 1): the top 24 bits, so every value is exact in `f32`.
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A float in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        self.unit_f32() * (hi - lo) + lo
    }

    /// An index below `n`.
    ///
    /// # Panics
    /// When `n` is 0.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// `n` floats in [lo, hi).
    pub fn uniform(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_is_marsaglias_xorshift64() {
        // from state 1: 1 ^ 1 << 13 = 0x2001; ^ >> 7 = 0x2001 ^ 0x40 = 0x2041; ^ << 17 = 0x4082_2041
        let mut r = Xorshift64::new(1);
        assert_eq!(r.next_u64(), 0x4082_2041);
        assert_eq!(Xorshift64::new(0), Xorshift64::new(1), "0 is taken as 1");
        // a value computed once and kept: the sequence must never change
        let mut r = Xorshift64::new(88172645463325252);
        let v: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(v, [8748534153485358512, 3040900993826735515, 3453997556048239312]);
    }

    #[test]
    fn floats_are_in_range_and_spread() {
        let v = Xorshift64::seeded(3).uniform(10_000, -2.0, 2.0);
        assert!(v.iter().all(|x| (-2.0..2.0).contains(x)));
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean.abs() < 0.05, "{mean}");
        assert!(v.iter().any(|&x| x < -1.9) && v.iter().any(|&x| x > 1.9));
        // small seeds give different streams, the same seed the same one
        assert_ne!(Xorshift64::seeded(1).uniform(4, 0.0, 1.0), Xorshift64::seeded(2).uniform(4, 0.0, 1.0));
        assert_eq!(Xorshift64::seeded(7).uniform(4, 0.0, 1.0), Xorshift64::seeded(7).uniform(4, 0.0, 1.0));
        let mut r = Xorshift64::seeded(0);
        assert!((0..1000).map(|_| r.below(6)).all(|d| d < 6));
    }
}

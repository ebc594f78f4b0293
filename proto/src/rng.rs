//! The one seeded generator every part uses (SplitMix64): a seed reproduces a
//! lab run, a training run or a page sample regardless of dependency versions.

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub const fn new(seed: u64) -> Self {
        SplitMix64 {
            state: seed ^ GOLDEN,
        }
    }

    /// Mixes `x` into the state (for deriving independent child streams).
    pub fn perturb(&mut self, x: u64) {
        self.state ^= x;
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn known_first_output() {
        // SplitMix64 seeded with state 0 yields this first value.
        let mut r = SplitMix64::new(GOLDEN);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
    }
}

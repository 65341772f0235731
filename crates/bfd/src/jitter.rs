//! Randomness the sessions need, injected so tests are deterministic:
//! per-packet transmit jitter (RFC 5880 §6.8.7) and discriminators.

use std::time::Duration;

/// A source of random numbers. Not for cryptography.
pub trait Rng {
    fn next_u32(&mut self) -> u32;
}

/// SplitMix64: small, fast, and good enough for jitter and discriminators.
/// The runtime seeds it from the OS (through std's randomly keyed hasher).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// Seeded from std's per-process random hash keys.
    pub fn from_entropy() -> SplitMix64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        SplitMix64(h.finish())
    }
}

impl Rng for SplitMix64 {
    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 32) as u32
    }
}

/// The interval to the next periodic packet: `interval` reduced by 0–25 %
/// (75–100 % of it), or to 75–90 % when our detect multiplier is 1, so a
/// single late packet cannot cost the peer its session (§6.8.7).
pub fn jittered(interval: Duration, detect_mult: u8, rng: &mut dyn Rng) -> Duration {
    // Per mille, so the spread is finer than whole percents.
    let span = if detect_mult == 1 { 151 } else { 251 };
    let permille = 750 + rng.next_u32() % span;
    let us = interval.as_micros() * u128::from(permille) / 1000;
    Duration::from_micros(us.min(u128::from(u64::MAX)) as u64)
}

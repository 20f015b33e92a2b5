//! Small deterministic randomness. SplitMix64 and the 64-bit mixer live in core (the
//! provider simulation hashes and routes with them); object ids are made here.

pub use prefixcache_core::provider::rng::{SplitMix64, fold, mix64};

/// A random-looking alphanumeric string of `len` characters, as in API object ids.
pub fn alnum(rng: &mut SplitMix64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alnum_uses_the_alphabet_and_the_length() {
        let mut r = SplitMix64::new(3);
        let s = alnum(&mut r, 29);
        assert_eq!(s.len(), 29);
        assert!(s.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(s, alnum(&mut r, 29));
    }
}

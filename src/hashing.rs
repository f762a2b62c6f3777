//! The digests that routing is defined over.
//!
//! `H(s)` is the digest of the UTF-8 bytes of a key's canonical string, read as one big-endian
//! unsigned integer. Digests are kept as 20-byte big-endian arrays (md5's 16 bytes left-padded
//! with zeros) so that comparing two arrays compares the integers, whatever the hash.

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha1::{Digest as _, Sha1};

/// A digest as a 160-bit big-endian integer.
pub type Token = [u8; 20];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashKind {
    Identity,
    Md5,
    Sha1,
}

impl HashKind {
    pub fn name(self) -> &'static str {
        match self {
            HashKind::Identity => "identity",
            HashKind::Md5 => "md5",
            HashKind::Sha1 => "sha1",
        }
    }

    pub fn parse(s: &str) -> Option<HashKind> {
        match s {
            "identity" => Some(HashKind::Identity),
            "md5" => Some(HashKind::Md5),
            "sha1" => Some(HashKind::Sha1),
            _ => None,
        }
    }

    /// Width of the digest in bits (0 for identity, which is not a digest).
    pub fn bits(self) -> u32 {
        match self {
            HashKind::Identity => 0,
            HashKind::Md5 => 128,
            HashKind::Sha1 => 160,
        }
    }

    /// The digest of `s` as a token. Identity has no digest; callers never ask for one.
    pub fn token(self, s: &[u8]) -> Token {
        let mut out = [0u8; 20];
        match self {
            HashKind::Sha1 => out.copy_from_slice(&Sha1::digest(s)),
            HashKind::Md5 => out[4..].copy_from_slice(&Md5::digest(s)),
            HashKind::Identity => {}
        }
        out
    }
}

/// `token mod n`, the token read as a big-endian integer.
pub fn token_mod(token: &Token, n: u64) -> u64 {
    let n = n as u128;
    token.iter().fold(0u128, |r, &b| (r * 256 + b as u128) % n) as u64
}

/// The token as a fraction of the hash space `2^bits`, to f64 precision.
pub fn token_fraction(token: &Token, bits: u32) -> f64 {
    // The top 8 significant bytes carry more precision than an f64 holds.
    let skip = (160 - bits as usize) / 8;
    let mut v = 0f64;
    let mut scale = 1.0 / 256.0;
    for &b in &token[skip..skip + 8] {
        v += b as f64 * scale;
        scale /= 256.0;
    }
    v
}

pub fn token_hex(token: &Token, bits: u32) -> String {
    let skip = (160 - bits as usize) / 8;
    token[skip..].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_and_md5_known_vectors() {
        let t = HashKind::Sha1.token(b"abc");
        assert_eq!(
            token_hex(&t, 160),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let t = HashKind::Md5.token(b"abc");
        assert_eq!(token_hex(&t, 128), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn token_mod_matches_small_integers() {
        let mut t = [0u8; 20];
        t[19] = 200;
        t[18] = 1; // 456
        assert_eq!(token_mod(&t, 7), 456 % 7);
        assert_eq!(token_mod(&[0xff; 20], 1), 0);
    }

    #[test]
    fn fraction_of_half_is_half() {
        let mut t = [0u8; 20];
        t[0] = 0x80;
        assert_eq!(token_fraction(&t, 160), 0.5);
        let mut t = [0u8; 20];
        t[4] = 0x40;
        assert_eq!(token_fraction(&t, 128), 0.25);
    }
}

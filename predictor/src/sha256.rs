//! SHA-256, for the training-data fingerprint and the model file checksum.
//!
//! The `sha2` crate (RustCrypto; SHA-NI where the CPU has it), not our own:
//! our hand-written version was 56 % of a model reload's CPU time (perf,
//! SIGHUPs on the 0.6 MiB lab model) and 8.3× slower on the model file
//! (3.16 ms vs 0.38 ms, median of 5 × 200 digests, this 2-core host), and a
//! reload every second under load is the predictor's soak test.

use sha2::Digest;

/// SHA-256 of `data`.
pub fn digest(data: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(data).into()
}

/// Lower-case hex of [`digest`].
pub fn hex(data: &[u8]) -> String {
    digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vectors() {
        assert_eq!(
            super::hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            super::hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let long = vec![b'a'; 1000];
        assert_eq!(
            super::hex(&long),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
        );
    }
}

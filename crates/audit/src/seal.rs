//! Sealing: HMAC-SHA256 (RFC 2104) with a 32-byte key kept in a root-only
//! file outside the trail directory.
//!
//! A checkpoint record's `seal` is `HMAC(key, "vt-audit-checkpoint" ‖
//! seq ‖ prev)` (seq as 8 little-endian bytes, prev the 32 hash bytes of
//! the record before it, which commits to every earlier record). The
//! trail's `head` file holds `HMAC(key, "vt-audit-head" ‖ seq ‖ hash)` of
//! the newest record, so a cut-off end is detected too. Who holds the key
//! can re-seal a rewritten trail: see ARCHITECTURE.md for what that means.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::record::hex;

/// A sealing key.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// Reads the key at `path` (32 bytes), or makes one from
    /// `/dev/urandom` with mode 0600 when there is none.
    pub fn load_or_create(path: &Path) -> io::Result<Key> {
        match Key::load(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let mut k = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut k)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(&k)?;
        f.sync_all()?;
        Ok(Key(k))
    }

    /// Reads the key at `path`; it must be exactly 32 bytes.
    pub fn load(path: &Path) -> io::Result<Key> {
        let bytes = std::fs::read(path)?;
        let k: [u8; 32] = bytes.try_into().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: a sealing key is exactly 32 bytes", path.display()),
            )
        })?;
        Ok(Key(k))
    }

    /// A key from bytes (tests, benchmarks).
    pub fn from_bytes(k: [u8; 32]) -> Key {
        Key(k)
    }

    fn mac(&self, label: &[u8], seq: u64, hash: &[u8; 32]) -> String {
        // HMAC takes a key of any length: new_from_slice cannot fail here.
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        m.update(label);
        m.update(&seq.to_le_bytes());
        m.update(hash);
        hex(&m.finalize().into_bytes())
    }

    /// The seal of a checkpoint with sequence number `seq` whose `prev`
    /// is `prev`.
    pub fn checkpoint(&self, seq: u64, prev: &[u8; 32]) -> String {
        self.mac(b"vt-audit-checkpoint", seq, prev)
    }

    /// The seal of the head: the newest record is `seq` with hash `hash`.
    pub fn head(&self, seq: u64, hash: &[u8; 32]) -> String {
        self.mac(b"vt-audit-head", seq, hash)
    }
}

/// Constant-time comparison of two seals.
pub fn same(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_depend_on_key_seq_and_hash() {
        let k = Key::from_bytes([1; 32]);
        let s = k.checkpoint(5, &[2; 32]);
        assert_eq!(s.len(), 64);
        assert!(same(&s, &k.checkpoint(5, &[2; 32])));
        assert!(!same(&s, &k.checkpoint(6, &[2; 32])));
        assert!(!same(&s, &k.checkpoint(5, &[3; 32])));
        assert!(!same(&s, &Key::from_bytes([9; 32]).checkpoint(5, &[2; 32])));
        assert!(!same(&s, &k.head(5, &[2; 32])));
    }

    #[test]
    fn a_key_file_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("audit-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        let a = Key::load_or_create(&p).unwrap();
        let b = Key::load_or_create(&p).unwrap();
        assert_eq!(a.0, b.0);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&p, b"short").unwrap();
        assert!(Key::load(&p).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

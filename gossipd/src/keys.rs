//! Peers' KEM key records kept on disk across gossipd restarts.
//! Capability: P3 (with R3).
//!
//! Why: a DM from a peer verifies only once its key record is known, and a
//! peer sends its record when its connection comes up. relayd keeps the
//! connections while gossipd restarts, so a restarted gossipd would not
//! hear those records again and would hold the peers' DMs — including the
//! ones relayd re-sends from retention — unverified until they expire.
//! Every record seen on the link is written (one file per owner, atomic
//! rename); at start the daemon hands them to `Gossip::add_kem_key`, which
//! checks each signature again, so a tampered file is refused there.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use libgossip::wire::{KemKey, Limits};

/// Most peers' key records kept.
pub const MAX_SAVED_KEYS: usize = 4096;

/// The directory of saved key records.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    saved: Mutex<HashSet<[u8; 32]>>,
    /// Records written.
    pub written: AtomicU64,
    /// Records not written (store full, or a write failed).
    pub not_written: AtomicU64,
}

impl KeyStore {
    /// The store in `dir` (created by the daemon, mode 0700).
    #[must_use]
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            saved: Mutex::new(HashSet::new()),
            written: AtomicU64::new(0),
            not_written: AtomicU64::new(0),
        }
    }

    /// The records saved by earlier runs (at most [`MAX_SAVED_KEYS`]),
    /// parsed; unreadable or malformed files are skipped.
    #[must_use]
    pub fn load(dir: &Path) -> Vec<KemKey> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "kem"))
            .take(MAX_SAVED_KEYS)
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|raw| KemKey::parse(&Bytes::from(raw), &Limits::default()).ok())
            .collect()
    }

    /// Saves `payload` if it is a KEM key record; anything else is ignored.
    pub fn save(&self, payload: &[u8]) {
        let data = Bytes::copy_from_slice(payload);
        let Ok(record) = KemKey::parse(&data, &Limits::default()) else {
            return;
        };
        let owner = record.owner().0;
        {
            let mut saved = crate::lock(&self.saved);
            if !saved.contains(&owner) && saved.len() >= MAX_SAVED_KEYS {
                self.not_written.fetch_add(1, Ordering::Relaxed);
                return;
            }
            saved.insert(owner);
        }
        let name: String = owner.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = self.dir.join(format!("{name}.tmp"));
        // Temp file and rename: a crash leaves the old record or the new.
        let r = std::fs::write(&tmp, payload)
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(format!("{name}.kem"))));
        match r {
            Ok(()) => self.written.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, "saving a key record failed");
                self.not_written.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

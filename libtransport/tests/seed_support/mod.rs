//! Shared by the `*_fuzz_seeds` tests: keeps a fuzz target's committed seed
//! corpus (`fuzz/corpus/<target>/`) equal to the seeds a test builds.
#![allow(clippy::unwrap_used)] // test helper: a failed file operation should fail loudly

use std::path::PathBuf;

/// Checks that every `(name, bytes)` seed is committed under
/// `fuzz/corpus/<target>/` with exactly these bytes; with
/// `TERN_WRITE_FUZZ_SEEDS=1` (re)writes them first.
pub fn check_committed<'a>(target: &str, seeds: impl IntoIterator<Item = (&'a str, &'a [u8])>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let write = std::env::var_os("TERN_WRITE_FUZZ_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    for (name, bytes) in seeds {
        let path = dir.join(name);
        if write {
            std::fs::write(&path, bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (regenerate with TERN_WRITE_FUZZ_SEEDS=1)",
                path.display()
            )
        });
        assert_eq!(
            committed, bytes,
            "{name} is stale (regenerate with TERN_WRITE_FUZZ_SEEDS=1)"
        );
    }
}

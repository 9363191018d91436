//! Keeps a fuzz target's committed seed corpus equal to the seeds a test
//! builds, so the corpus the fuzz smoke run replays is the one the tests
//! describe.

use std::path::PathBuf;

/// The environment variable that makes [`check_committed`] (re)write the
/// corpus before comparing.
pub const WRITE_VAR: &str = "TERN_WRITE_FUZZ_SEEDS";

/// `fuzz/corpus/<target>/` of this workspace.
pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Checks that every `(name, bytes)` seed is committed under
/// `fuzz/corpus/<target>/` with exactly these bytes and that the directory
/// holds no other file (a stray file would be replayed by the smoke run but
/// described by no test); with `TERN_WRITE_FUZZ_SEEDS=1` writes them first.
///
/// # Panics
/// On any mismatch, missing or stray file, naming it and how to regenerate.
pub fn check_committed<'a>(target: &str, seeds: impl IntoIterator<Item = (&'a str, &'a [u8])>) {
    let dir = corpus_dir(target);
    let write = std::env::var_os(WRITE_VAR).is_some();
    if write && let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("{}: {e}", dir.display());
    }
    let mut named = Vec::new();
    for (name, bytes) in seeds {
        let path = dir.join(name);
        if write && let Err(e) = std::fs::write(&path, bytes) {
            panic!("{}: {e}", path.display());
        }
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (regenerate with {WRITE_VAR}=1)", path.display()));
        assert!(
            committed == bytes,
            "{target}/{name} is stale (regenerate with {WRITE_VAR}=1)"
        );
        named.push(name.to_owned());
    }
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut on_disk: Vec<String> = entries
        .map(|e| match e {
            Ok(e) => e.file_name().to_string_lossy().into_owned(),
            Err(e) => panic!("{}: {e}", dir.display()),
        })
        .collect();
    on_disk.sort();
    named.sort();
    assert_eq!(
        on_disk, named,
        "{target}: corpus files and named seeds differ (regenerate with {WRITE_VAR}=1 after removing stale files)"
    );
}

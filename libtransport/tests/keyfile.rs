//! The node identity key file: saved atomically with mode 0600, never
//! replaced, loaded only when owner-only, bounded before reading, and every
//! bad file a typed error naming the path (the node identity relayd and
//! gossipd load; C1's `identity new|show` stand on it).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

use std::os::unix::fs::PermissionsExt;

use libtransport::keyfile::MAX_KEY_FILE;
use libtransport::{Identity, KeyFileError};

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn save_then_load_gives_the_same_identity_with_mode_0600() {
    let d = dir();
    let path = d.path().join("node.key");
    let id = Identity::generate().unwrap();
    id.save_file(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    let back = Identity::load_file(&path).unwrap();
    assert_eq!(back.peer_id(), id.peer_id());
    // The loaded key signs like the original: same public key.
    assert_eq!(back.public_key(), id.public_key());
    // No temporary file is left next to it.
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("node.key")]);
}

#[test]
fn saving_never_replaces_an_existing_identity() {
    let d = dir();
    let path = d.path().join("node.key");
    let first = Identity::generate().unwrap();
    first.save_file(&path).unwrap();
    let second = Identity::generate().unwrap();
    let err = second.save_file(&path).unwrap_err();
    assert!(matches!(err, KeyFileError::AlreadyExists { .. }), "{err}");
    assert_eq!(
        Identity::load_file(&path).unwrap().peer_id(),
        first.peer_id()
    );
}

#[test]
fn load_or_generate_creates_once_then_loads() {
    let d = dir();
    let path = d.path().join("sub-key");
    let (a, created) = Identity::load_or_generate(&path).unwrap();
    assert!(created);
    let (b, created) = Identity::load_or_generate(&path).unwrap();
    assert!(!created);
    assert_eq!(a.peer_id(), b.peer_id());
}

#[test]
fn group_or_world_access_is_refused() {
    let d = dir();
    let path = d.path().join("node.key");
    Identity::generate().unwrap().save_file(&path).unwrap();
    for mode in [0o640, 0o604, 0o660, 0o644, 0o602] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        match Identity::load_file(&path) {
            Err(KeyFileError::InsecurePermissions { mode: m, .. }) => assert_eq!(m, mode),
            other => panic!("mode {mode:o}: {other:?}"),
        }
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(
        Identity::load_file(&path).is_ok(),
        "0400 is stricter than 0600"
    );
}

#[test]
fn bad_files_are_typed_errors_naming_the_path() {
    let d = dir();
    let missing = d.path().join("absent.key");
    let err = Identity::load_file(&missing).unwrap_err();
    assert!(matches!(err, KeyFileError::NotFound { .. }));
    assert!(err.to_string().contains("absent.key"), "{err}");

    let garbage = d.path().join("garbage.key");
    std::fs::write(&garbage, b"not a key at all").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        Identity::load_file(&garbage),
        Err(KeyFileError::Malformed { .. })
    ));

    // Truncated: every prefix of a real key file is refused, none panics.
    let good = d.path().join("good.key");
    Identity::generate().unwrap().save_file(&good).unwrap();
    let der = std::fs::read(&good).unwrap();
    let cut = d.path().join("cut.key");
    for len in [0, 1, 16, der.len() / 2, der.len() - 1] {
        std::fs::write(&cut, &der[..len]).unwrap();
        std::fs::set_permissions(&cut, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            matches!(
                Identity::load_file(&cut),
                Err(KeyFileError::Malformed { .. })
            ),
            "prefix {len}"
        );
    }

    let big = d.path().join("big.key");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(1 << 30).unwrap(); // sparse: 1 GiB announced, nothing read
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
    match Identity::load_file(&big) {
        Err(KeyFileError::TooLarge { len, max, .. }) => {
            assert_eq!((len, max), (1 << 30, MAX_KEY_FILE));
        }
        other => panic!("{other:?}"),
    }

    assert!(matches!(
        Identity::load_file(d.path()),
        Err(KeyFileError::NotAFile { .. })
    ));
}

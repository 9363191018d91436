//! The committed fuzz seed corpus (`fuzz/corpus/<target>/`) is exactly what
//! the current samples produce, so seeds stay valid when schemas change (P1,
//! V5). Regenerate with:
//!
//! ```sh
//! TERN_WRITE_FUZZ_SEEDS=1 cargo test -p wire --test fuzz_seeds
//! ```

// Tests may unwrap (STYLE.md); helpers outside #[test] fns need the allow.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn framed(payloads: &[&[u8]]) -> Vec<u8> {
    // Two bytes selecting the frame_decoder's maximum: 4 KiB + 0xffff.
    let mut v = vec![0xff, 0xff];
    for p in payloads {
        v.extend_from_slice(&(p.len() as u32).to_le_bytes());
        v.extend_from_slice(p);
    }
    v
}

/// Every seed file: path relative to `fuzz/corpus` → contents.
fn seeds() -> BTreeMap<PathBuf, Vec<u8>> {
    let samples = common::all_samples();
    let mut out = BTreeMap::new();
    for (name, bytes) in &samples {
        let (schema, msg) = name.split_once('/').unwrap();
        out.insert(
            Path::new(&format!("schema_{schema}")).join(msg),
            bytes.clone(),
        );
        out.insert(
            Path::new("frame_decoder").join(format!("{schema}_{msg}")),
            framed(&[bytes]),
        );
        // verifyd's request decoder reads the same verify-schema payloads.
        if schema == "verify" {
            out.insert(Path::new("verify_request").join(msg), bytes.clone());
        }
    }
    let small: Vec<&[u8]> = samples
        .iter()
        .filter(|(_, b)| b.len() < 4096)
        .map(|(_, b)| &b[..])
        .collect();
    out.insert(
        Path::new("frame_decoder").join("stream_of_small_frames"),
        framed(&small),
    );
    let mut oversize = vec![0, 0];
    oversize.extend_from_slice(&u32::MAX.to_le_bytes());
    oversize.extend_from_slice(b"tail");
    out.insert(Path::new("frame_decoder").join("oversize"), oversize);
    out.insert(
        Path::new("frame_decoder").join("zero_length"),
        vec![0, 0, 0, 0, 0, 0],
    );
    let mut truncated = framed(&[&samples[0].1]);
    truncated.truncate(truncated.len() / 2);
    out.insert(Path::new("frame_decoder").join("truncated"), truncated);
    out
}

/// Corpus directories another crate's test generates and checks (left alone
/// here): `ack_message` by `libtransport/tests/ack_fuzz_seeds.rs`,
/// `stream_decoder` by `libtransport/tests/stream_fuzz_seeds.rs`,
/// `gossip_message` by `libgossip/tests/wire_fuzz_seeds.rs`, and
/// `gossip_node_ops` (operation sequences for `arbitrary`, replayed by
/// `scripts/fuzz-smoke.sh`).
const OTHER_OWNERS: &[&str] = &[
    "ack_message",
    "stream_decoder",
    "gossip_message",
    "gossip_node_ops",
];

#[test]
fn committed_fuzz_seeds_match_the_samples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let want = seeds();
    if std::env::var_os("TERN_WRITE_FUZZ_SEEDS").is_some() {
        for dir in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if !OTHER_OWNERS.iter().any(|o| dir.file_name() == *o) {
                let _ = std::fs::remove_dir_all(dir.path());
            }
        }
        for (rel, bytes) in &want {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
        }
        eprintln!("wrote {} seeds under {}", want.len(), root.display());
    }
    let mut have = BTreeMap::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap();
        if OTHER_OWNERS.iter().any(|o| dir.file_name() == *o) {
            continue;
        }
        for file in std::fs::read_dir(dir.path()).unwrap() {
            let file = file.unwrap();
            let rel = Path::new(&dir.file_name()).join(file.file_name());
            have.insert(rel, std::fs::read(file.path()).unwrap());
        }
    }
    let stale: Vec<_> = want
        .iter()
        .filter(|(k, v)| have.get(*k) != Some(v))
        .map(|(k, _)| k.display().to_string())
        .chain(
            have.keys()
                .filter(|k| !want.contains_key(*k))
                .map(|k| format!("{} (extra)", k.display())),
        )
        .collect();
    assert!(
        stale.is_empty(),
        "fuzz seeds out of date: {stale:?}; run TERN_WRITE_FUZZ_SEEDS=1 cargo test -p wire --test fuzz_seeds"
    );
    // Every schema seed verifies as its schema, so the corpus starts from
    // valid messages rather than noise.
    for (rel, bytes) in &want {
        let target = rel.parent().unwrap().to_str().unwrap();
        let ok = match target {
            "schema_hello" => common::walk::hello(bytes).is_some(),
            "schema_error" => common::walk::error(bytes).is_some(),
            "schema_verify" => common::walk::verify(bytes).is_some(),
            "schema_relay" => common::walk::relay(bytes).is_some(),
            "schema_admin" => common::walk::admin(bytes).is_some(),
            "schema_client" => common::walk::client(bytes).is_some(),
            _ => true,
        };
        assert!(ok, "{} does not verify", rel.display());
    }
}

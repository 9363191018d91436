//! Each backend's `VerifyKey::footprint` against the memory a decoded key
//! really takes: a child process (one per backend, so no backend reuses
//! memory another freed) decodes 4,000 distinct keys and reports its RSS
//! growth per key. The key cache's byte bound (V2) is only as good as these
//! figures.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test

use verifyd::BackendKind;

const KEYS: usize = 4000;
const CHILD_ENV: &str = "TERN_KEY_FOOTPRINT_CHILD";

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: usize = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// In the child: decode KEYS keys of the named backend, print
/// "FOOTPRINT measured footprint" on a line of its own.
fn child(kind: BackendKind) {
    let b = kind.build();
    let mut seed = 0x1234_5678_u64;
    let mut next_key = || {
        let mut k = vec![0u8; verifyd::PUBLIC_KEY_LEN];
        for c in k.chunks_mut(8) {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            c.copy_from_slice(&seed.to_le_bytes()[..c.len()]);
        }
        k
    };
    // Warm the allocator and the backend (tables, thread-locals).
    let warm: Vec<_> = (0..100)
        .map(|_| b.decode_key(&next_key()).unwrap())
        .collect();
    let keys: Vec<Vec<u8>> = (0..KEYS).map(|_| next_key()).collect();
    let before = rss();
    let decoded: Vec<_> = keys.iter().map(|k| b.decode_key(k).unwrap()).collect();
    let grown = rss().saturating_sub(before);
    println!("\nFOOTPRINT {} {}", grown / KEYS, decoded[0].footprint());
    drop((warm, decoded));
}

/// V2: every backend built in states a footprint within [0.6, 1.6]× the
/// RSS a decoded key adds (the Arc header is the only thing a footprint may
/// leave out; page rounding and allocator slack account for the rest).
#[test]
fn footprints_match_measured_memory() {
    if let Ok(name) = std::env::var(CHILD_ENV) {
        let kind: BackendKind = name.parse().unwrap();
        child(kind);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for kind in BackendKind::ALL {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "footprints_match_measured_memory",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, kind.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{kind}: child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| {
                let mut it = l.strip_prefix("FOOTPRINT ")?.split_whitespace();
                let m: usize = it.next()?.parse().ok()?;
                let f: usize = it.next()?.parse().ok()?;
                it.next().is_none().then_some((m, f))
            })
            .unwrap_or_else(|| panic!("{kind}: no figures in {stdout}"));
        let (measured, footprint) = line;
        eprintln!("{kind}: measured {measured} bytes per decoded key, footprint {footprint}");
        let ratio = footprint as f64 / measured.max(1) as f64;
        assert!(
            (0.6..=1.6).contains(&ratio),
            "{kind}: footprint {footprint} vs measured {measured} bytes per key (ratio {ratio:.2})"
        );
    }
}

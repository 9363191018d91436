//! `stagebench ipc idle-sessions=N`: what idle ring sessions cost in
//! resident memory.
//!
//! Sets up `N` sessions the way verifyd does — two rings per session (one
//! each way) at verifyd's default capacity (4 MiB per direction, records up
//! to just under 2 MiB) over a real socket pair — and then leaves them idle.
//! Both ends live in this process, so every ring is mapped twice here; the
//! figure per *mapping* is what one process (a daemon, say) pays per ring it
//! holds. Resident memory is read from `/proc/self/status` before the first
//! session and once all are set up.

use anyhow::{Context, Result, bail};
use serde_json::json;
use wire::ring::Geometry;

use super::shm_pair;
use crate::Table;

/// verifyd's default ring geometry: 4 MiB data area, records up to the
/// 16 MiB frame limit capped by half the area.
fn verifyd_geometry() -> Result<Geometry> {
    Geometry::negotiated(4 << 20, 16 << 20).map_err(|e| anyhow::anyhow!("geometry: {e}"))
}

/// `VmRSS` and `RssShmem` of this process, KiB.
fn rss_kib() -> Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} missing from /proc/self/status"))?;
        let kib = line
            .split_whitespace()
            .nth(1)
            .with_context(|| format!("{name} has no value"))?;
        Ok(kib.parse()?)
    };
    Ok((field("VmRSS:")?, field("RssShmem:")?))
}

/// Sets up `sessions` idle sessions and reports resident memory.
pub fn run(sessions: usize) -> Result<(Table, serde_json::Value)> {
    if sessions == 0 {
        bail!("idle-sessions must be at least 1");
    }
    let geo = verifyd_geometry()?;
    let cfg = wire::ring::SpinConfig::default();
    let (rss0, shm0) = rss_kib()?;
    let mut held = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        // Requests one way, answers the other, as in a verifyd session.
        held.push((shm_pair(geo, cfg)?, shm_pair(geo, cfg)?));
    }
    let (rss1, shm1) = rss_kib()?;
    let mappings = (sessions * 4) as f64;
    let per_mapping_kib = rss1.saturating_sub(rss0) as f64 / mappings;
    let shm_per_mapping_kib = shm1.saturating_sub(shm0) as f64 / mappings;
    let mapped_kib = (geo.mapping_len() / 1024) as f64;
    let mut table = Table::new(
        format!(
            "idle ring sessions: {sessions} sessions x 2 rings of {} KiB, both ends in this process",
            geo.capacity() / 1024
        ),
        &[
            "sessions",
            "VmRSS before MiB",
            "VmRSS after MiB",
            "RssShmem after MiB",
            "resident KiB per mapping",
            "shmem KiB per mapping",
            "mapped KiB per mapping",
        ],
    );
    table.row([
        sessions.to_string(),
        format!("{:.1}", rss0 as f64 / 1024.0),
        format!("{:.1}", rss1 as f64 / 1024.0),
        format!("{:.1}", shm1 as f64 / 1024.0),
        format!("{per_mapping_kib:.1}"),
        format!("{shm_per_mapping_kib:.1}"),
        format!("{mapped_kib:.0}"),
    ]);
    let summary = json!({
        "suite": "ipc",
        "case": "idle_sessions",
        "sessions": sessions,
        "ring_capacity_bytes": geo.capacity(),
        "rss_kib_before": rss0,
        "rss_kib_after": rss1,
        "rss_shmem_kib_after": shm1,
        "resident_kib_per_mapping": (per_mapping_kib * 10.0).round() / 10.0,
        "shmem_kib_per_mapping": (shm_per_mapping_kib * 10.0).round() / 10.0,
        "mapped_kib_per_mapping": mapped_kib,
    });
    drop(held);
    Ok((table, summary))
}

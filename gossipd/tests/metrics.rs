//! gossipd's Prometheus endpoint (`gossipd.metrics_listen`), spawned for
//! real with no relayd up: every value of `gossipd::metrics::VALUES` is
//! scraped with its type, everything `diagnostics` counts is among them,
//! and the names are the ones `docs/config.md` lists; a non-loopback
//! address is refused (exit 2), a taken port fails the start (exit 1)
//! with the sockets removed. Config comes from `--set` flags alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The tests own the clock: every wait is bounded by a deadline.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use gossipd::metrics::{Kind, VALUES};
use prometheus_parse::Scrape;
use test_support::daemon::{Killed, PATIENCE, wait_for};
use test_support::scrape::{free_port, get_metrics as scrape, value};

/// `--set` flags putting a node's sockets and key inside `dir`.
fn node_flags(dir: &Path, metrics: &str) -> Vec<String> {
    [
        "node.name=t".to_owned(),
        format!("node.runtime_dir={}", dir.join("run").display()),
        format!(
            "node.identity_key={}",
            dir.join("state/identity.key").display()
        ),
        format!("gossipd.metrics_listen={metrics}"),
    ]
    .into_iter()
    .flat_map(|s| ["--set".to_owned(), s])
    .collect()
}

fn gossipd(dir: &Path, metrics: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gossipd"));
    c.args(node_flags(dir, metrics))
        .env_remove("TERN_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null());
    c
}

/// Runs gossipd to its end and asserts it failed with `code`, saying
/// `reason` on stderr.
fn fails(dir: &Path, metrics: &str, extra: &[&str], code: i32, reason: &str) {
    let out: Output = gossipd(dir, metrics).args(extra).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{extra:?}: {err}");
    assert!(err.contains(reason), "{extra:?}: {err}");
}

fn sock(dir: &Path, name: &str) -> PathBuf {
    dir.join("run/t").join(name)
}

/// With relayd down: every value is scraped under its documented name
/// and type, attach failures count up, `relayd_attached` is 0, and
/// nothing `diagnostics` counts is missing. Capability: R1.
#[test]
fn metrics_endpoint_serves_every_diagnostics_value() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _g = Killed(
        gossipd(dir.path(), &format!("127.0.0.1:{port}"))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let diag = wait_for(
        &sock(dir.path(), "gossipd-admin.sock"),
        "gossipd",
        "retrying while relayd is down",
        |j| j["link"]["attach_failures"].as_u64().unwrap() >= 1,
    );
    // Sampled once a second: wait for a sample taken after a failure.
    let deadline = std::time::Instant::now() + PATIENCE;
    let (head, body, parsed) = loop {
        let (head, body) = scrape(port);
        let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
        if value(&parsed, "gossipd_link_attach_failures_total").is_some_and(|v| v > 0.0) {
            break (head, body, parsed);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never sampled:\n{body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    let build = parsed
        .samples
        .iter()
        .find(|s| s.metric == "gossipd_build_info")
        .expect("gossipd_build_info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(value(&parsed, "gossipd_relayd_attached"), Some(0.0));
    assert_eq!(value(&parsed, "gossipd_link_attaches_total"), Some(0.0));

    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md")).unwrap();
    for e in VALUES {
        let family = format!("gossipd_{}", e.metric());
        let (ty, sample) = match e.kind {
            Kind::Counter => ("counter", format!("{family}_total")),
            Kind::Gauge => ("gauge", family.clone()),
        };
        assert!(
            body.contains(&format!("# TYPE {family} {ty}\n")),
            "{family} is no {ty}:\n{body}"
        );
        assert!(value(&parsed, &sample).is_some(), "{sample} missing");
        assert!(
            docs.contains(&format!("`{sample}`")),
            "{sample} not in docs/config.md"
        );
    }

    // Everything diagnostics counts is exported, but for the process's
    // identity and the listeners' own counters (relayd exports neither).
    let exported = |section: &str, name: &str| {
        VALUES
            .iter()
            .any(|e| e.section == section && e.name == name)
    };
    for (k, v) in diag.as_object().unwrap() {
        match v {
            serde_json::Value::Object(section) if !k.ends_with("_socket") => {
                for name in section.keys() {
                    assert!(exported(k, name), "{k}.{name} not exported");
                }
            }
            _ if matches!(
                k.as_str(),
                "daemon"
                    | "version"
                    | "pid"
                    | "instance"
                    | "uptime_s"
                    | "relayd_instance"
                    | "api_socket"
                    | "admin_socket"
            ) => {}
            _ => assert!(exported("", k), "{k} not exported"),
        }
    }
}

/// A metrics address off loopback is refused by `--check` and at start,
/// exit 2 naming the key, nothing bound. Capability: R1.
#[test]
fn a_non_loopback_metrics_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for extra in [&["--check"][..], &[]] {
        fails(
            dir.path(),
            "0.0.0.0:9464",
            extra,
            2,
            "gossipd.metrics_listen",
        );
        assert!(!sock(dir.path(), "gossipd-admin.sock").exists());
    }
}

/// A metrics port already taken fails the start (exit 1, the reason on
/// stderr) after the sockets were bound, and leaves none behind.
#[test]
fn a_taken_metrics_port_fails_the_start_and_removes_the_sockets() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    fails(dir.path(), &format!("127.0.0.1:{port}"), &[], 1, "metrics");
    // The socket directory was made: the sockets were bound, then removed.
    for name in ["", "gossipd-admin.sock", "gossipd.sock"] {
        assert_eq!(sock(dir.path(), name).exists(), name.is_empty(), "{name}");
    }
    drop(taken);
}

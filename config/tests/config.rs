//! Node config: defaults, file, `TERN_*` environment and flag overrides,
//! range checks with clear errors, per-node paths and `--check` output.
//! Capability: C2 (one TOML config per node, documented defaults,
//! overrides, `--check`, several nodes per host).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Parser;
use tern_config::keys::KEYS;
use tern_config::{ConfigArgs, ConfigError, Loader, NodeConfig, NodePaths, Origin};

fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("node.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// No file and no overrides give the documented defaults, and an empty
/// file is the same. Capability: C2.
#[test]
fn defaults_need_no_file() {
    let loaded = Loader::new().load().unwrap();
    assert_eq!(loaded.config, NodeConfig::default());
    assert_eq!(loaded.config.verifyd.key_capacity, 65_536);
    assert_eq!(loaded.config.relayd.ring_capacity, 4 << 20);
    assert_eq!(loaded.origin("verifyd.key_capacity"), Origin::Default);
    let dir = tempfile::tempdir().unwrap();
    let empty = Loader::new().file(write(dir.path(), "")).load().unwrap();
    assert_eq!(empty.config, NodeConfig::default());
}

/// Precedence is default < file < env < flag, and each value remembers
/// its origin. Capability: C2.
#[test]
fn file_env_and_flags_override_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        r#"
[node]
name = "alice"
[verifyd]
threads = 2
key_capacity = 1000
ring_capacity = 0
[relayd]
listen = ["[::1]:5000"]
"#,
    );
    let loaded = Loader::new()
        .file(&file)
        .env_vars(env(&[
            ("TERN_VERIFYD_THREADS", "3"),
            ("TERN_VERIFYD_KEY_CAPACITY", "2_000"),
            ("TERN_GOSSIPD_VERIFYD_SOCKETS", "/v/a.sock, /v/b.sock"),
            // Not in a section's namespace: someone else's variable.
            ("TERN_RUNTIME_DIR", "/ignored/here"),
            ("PATH", "/bin"),
        ]))
        .set("verifyd.threads", "4")
        .set_arg("node.log_level=info,relayd=debug")
        .load()
        .unwrap();
    let c = &loaded.config;
    assert_eq!(c.node.name, "alice");
    assert_eq!(c.verifyd.threads, Some(4));
    assert_eq!(c.verifyd.key_capacity, 2000);
    assert_eq!(c.verifyd.ring_capacity, 0);
    assert_eq!(c.relayd.listen, ["[::1]:5000".parse().unwrap()]);
    assert_eq!(
        c.gossipd.verifyd_sockets,
        [PathBuf::from("/v/a.sock"), PathBuf::from("/v/b.sock")]
    );
    assert_eq!(c.node.log_level, "info,relayd=debug");
    assert_eq!(loaded.origin("verifyd.threads"), Origin::Flag);
    assert_eq!(
        loaded.origin("verifyd.key_capacity"),
        Origin::Env("TERN_VERIFYD_KEY_CAPACITY".into())
    );
    assert_eq!(loaded.origin("node.name"), Origin::File(file.clone()));
    assert_eq!(loaded.origin("gossipd.max_clients"), Origin::Default);
}

fn out_of_range(err: ConfigError) -> Vec<(String, String, Origin)> {
    match err {
        ConfigError::OutOfRange(v) => v
            .into_iter()
            .map(|e| (e.problem.key.clone(), e.problem.to_string(), e.origin))
            .collect(),
        other => panic!("expected OutOfRange, got {other:?}"),
    }
}

/// The values verifyd used to start with — threads 0, ring capacity 10,
/// key capacity 0 — are all refused at once, each message naming the
/// valid range and where the value came from. Capability: C2.
#[test]
fn out_of_range_values_are_refused_with_the_valid_range() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "[verifyd]\nthreads = 0\n");
    let err = Loader::new()
        .file(&file)
        .env_vars(env(&[("TERN_VERIFYD_RING_CAPACITY", "10")]))
        .set("verifyd.key_capacity", "0")
        .load()
        .unwrap_err();
    let text = err.to_string();
    let got = out_of_range(err);
    assert_eq!(got.len(), 3, "{got:?}");
    let find = |k: &str| got.iter().find(|g| g.0 == k).unwrap().clone();
    let (_, msg, origin) = find("verifyd.threads");
    assert!(msg.contains("valid range is 1..=1024"), "{msg}");
    assert_eq!(origin, Origin::File(file));
    let (_, msg, origin) = find("verifyd.ring_capacity");
    assert!(
        msg.contains("0 (no ring) or a power of two in 65536..="),
        "{msg}"
    );
    assert_eq!(origin, Origin::Env("TERN_VERIFYD_RING_CAPACITY".into()));
    let (_, msg, origin) = find("verifyd.key_capacity");
    assert!(msg.contains("valid range is 1..=16777216"), "{msg}");
    assert_eq!(origin, Origin::Flag);
    assert!(
        text.contains("verifyd.threads = 0 is out of range"),
        "{text}"
    );
    assert!(text.contains("(from flag)"), "{text}");
}

/// Table of other refused values, one problem each. Capability: C2.
#[test]
fn more_bad_values() {
    let cases: &[(&str, &str, &str)] = &[
        ("node.name", "../etc", "node.name"),
        ("node.name", "", "node.name"),
        ("node.log_level", "loud", "node.log_level"),
        ("relayd.listen", "", "relayd.listen"),
        (
            "relayd.listen",
            "127.0.0.1:5000,[::1]:5000",
            "relayd.listen",
        ),
        ("relayd.ring_capacity", "0", "relayd.ring_capacity"),
        ("relayd.ring_capacity", "100000", "relayd.ring_capacity"),
        // A power of two, but a record of it cannot hold the largest DM.
        ("relayd.ring_capacity", "2097152", "relayd.ring_capacity"),
        ("relayd.retain_records", "0", "relayd.retain_records"),
        ("relayd.pump_bytes", "1000", "relayd.pump_bytes"),
        ("gossipd.max_clients", "0", "gossipd.max_clients"),
        (
            "gossipd.metrics_listen",
            "0.0.0.0:9464",
            "gossipd.metrics_listen",
        ),
        ("verifyd.threads", "1025", "verifyd.threads"),
        ("verifyd.backend", "openssl", "verifyd.backend"),
        (
            "verifyd.drain_deadline_s",
            "86400",
            "verifyd.drain_deadline_s",
        ),
    ];
    for &(key, value, want) in cases {
        let err = Loader::new().set(key, value).load().unwrap_err();
        let got = out_of_range(err);
        assert_eq!(got.len(), 1, "{key}={value}: {got:?}");
        assert_eq!(got[0].0, want, "{key}={value}");
    }
    // The edges of the ranges are accepted.
    let ok = Loader::new()
        .set("verifyd.threads", "1024")
        .set("verifyd.ring_capacity", "65536")
        .set("relayd.ring_capacity", "1073741824")
        .set("gossipd.metrics_listen", "127.0.0.1:9464")
        .set("verifyd.metrics_listen", "[::1]:9465")
        .load()
        .unwrap();
    assert_eq!(ok.config.verifyd.threads, Some(1024));
}

/// Unknown keys and values of the wrong type are typed errors naming the
/// source; a file error carries the line. Capability: C2.
#[test]
fn unknown_keys_and_wrong_types_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "[verifyd]\nthreds = 4\n");
    match Loader::new().file(&file).load() {
        Err(ConfigError::Parse { path, message }) => {
            assert_eq!(path, file);
            assert!(message.contains("threds"), "{message}");
            assert!(message.contains("line 2"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let file = write(dir.path(), "[verifyd]\nthreads = \"four\"\n");
    assert!(matches!(
        Loader::new().file(&file).load(),
        Err(ConfigError::Parse { .. })
    ));
    let file = write(dir.path(), "[verifyd\n");
    assert!(matches!(
        Loader::new().file(&file).load(),
        Err(ConfigError::Parse { .. })
    ));
    match Loader::new().file(dir.path().join("missing.toml")).load() {
        Err(ConfigError::Read { .. }) => {}
        other => panic!("{other:?}"),
    }
    match Loader::new()
        .env_vars(env(&[("TERN_VERIFYD_THREDS", "4")]))
        .load()
    {
        Err(ConfigError::UnknownKey { name, origin }) => {
            assert_eq!(name, "TERN_VERIFYD_THREDS");
            assert_eq!(origin, Origin::Env(name.clone()));
        }
        other => panic!("{other:?}"),
    }
    match Loader::new()
        .env_vars(env(&[("TERN_VERIFYD_THREADS", "lots")]))
        .load()
    {
        Err(ConfigError::BadValue { key, origin, .. }) => {
            assert_eq!(key, "verifyd.threads");
            assert_eq!(origin, Origin::Env("TERN_VERIFYD_THREADS".into()));
        }
        other => panic!("{other:?}"),
    }
    for bad in ["-1", "1.5", "99999999999999999999"] {
        let r = Loader::new().set("verifyd.threads", bad).load();
        assert!(
            matches!(r, Err(ConfigError::BadValue { .. })),
            "{bad}: {r:?}"
        );
    }
    match Loader::new().set("relayd.listen", "not-an-address").load() {
        Err(ConfigError::BadValue {
            key,
            origin,
            message,
            ..
        }) => {
            assert_eq!((key.as_str(), origin), ("relayd.listen", Origin::Flag));
            assert!(!message.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Loader::new().set_arg("verifyd.threads").load(),
        Err(ConfigError::BadSetArg(_))
    ));
    assert!(matches!(
        Loader::new().set("nosuch.key", "1").load(),
        Err(ConfigError::UnknownKey {
            origin: Origin::Flag,
            ..
        })
    ));
}

/// Sockets live in `<runtime>/<node>`, resolved like `wire::uds` does;
/// two nodes on one host never share a path; explicit paths win.
/// Capability: C2.
#[test]
fn paths_are_per_node() {
    let lookup = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let xdg: &[(&str, &str)] = &[("XDG_RUNTIME_DIR", "/run/user/1000"), ("HOME", "/home/a")];
    let mut a = NodeConfig::default();
    a.node.name = "alice".into();
    let mut b = a.clone();
    b.node.name = "bob".into();
    let pa = NodePaths::resolve_from(&a, lookup(xdg));
    let pb = NodePaths::resolve_from(&b, lookup(xdg));
    assert_eq!(pa.dir, Path::new("/run/user/1000/tern/alice"));
    assert_eq!(
        pa.relayd_socket,
        Path::new("/run/user/1000/tern/alice/relayd.sock")
    );
    assert_eq!(pa.gossipd_verifyd, std::slice::from_ref(&pa.verifyd_socket));
    assert_eq!(
        pa.identity_key,
        Path::new("/home/a/.local/state/tern/alice/identity.key")
    );
    let all_a: Vec<&PathBuf> = pa.list().into_iter().map(|(_, p)| p).collect();
    for (_, p) in pb.list() {
        assert!(!all_a.contains(&p), "{} shared by two nodes", p.display());
    }
    let none = NodePaths::resolve_from(&a, lookup(&[]));
    assert_eq!(
        none.verifyd_socket,
        Path::new("/run/tern/alice/verifyd.sock")
    );
    assert_eq!(
        none.identity_key,
        Path::new("/var/lib/tern/alice/identity.key")
    );
    let tern: &[(&str, &str)] = &[("TERN_RUNTIME_DIR", "/tmp/t"), ("XDG_STATE_HOME", "/s")];
    let t = NodePaths::resolve_from(&a, lookup(tern));
    assert_eq!(t.gossipd_socket, Path::new("/tmp/t/alice/gossipd.sock"));
    assert_eq!(t.identity_key, Path::new("/s/tern/alice/identity.key"));
    let mut c = a.clone();
    c.node.runtime_dir = Some("/srv/tern".into());
    c.verifyd.socket = Some("/elsewhere/v.sock".into());
    c.node.identity_key = Some("/keys/alice.key".into());
    let p = NodePaths::resolve_from(&c, lookup(tern));
    assert_eq!(
        p.relayd_admin,
        Path::new("/srv/tern/alice/relayd-admin.sock")
    );
    assert_eq!(p.verifyd_socket, Path::new("/elsewhere/v.sock"));
    assert_eq!(p.gossipd_verifyd, [PathBuf::from("/elsewhere/v.sock")]);
    assert_eq!(p.identity_key, Path::new("/keys/alice.key"));
}

/// `--check` output is the effective config with origins, and it parses
/// back as a config file to the same values. Capability: C2.
#[test]
fn check_output_round_trips() {
    let loaded = Loader::new()
        .env_vars(env(&[("TERN_NODE_NAME", "carol")]))
        .set("verifyd.threads", "2")
        .set("relayd.metrics_listen", "127.0.0.1:9100")
        .load()
        .unwrap();
    let paths = NodePaths::resolve_from(&loaded.config, |_| None);
    let text = loaded.render(&paths);
    assert!(
        text.contains("name = \"carol\"  # env TERN_NODE_NAME"),
        "{text}"
    );
    assert!(text.contains("threads = 2  # flag"), "{text}");
    assert!(text.contains("key_capacity = 65536  # default"), "{text}");
    assert!(text.contains("# identity_key unset  # default"), "{text}");
    assert!(
        text.contains("# relayd socket: /run/tern/carol/relayd.sock"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let again = Loader::new().file(write(dir.path(), &text)).load().unwrap();
    assert_eq!(again.config, loaded.config);
}

/// Every key and its environment variable are documented in
/// docs/config.md, and every key is settable by flag. Capability: C2.
#[test]
fn every_key_is_documented_and_settable() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md"))
            .unwrap();
    let defaults = toml::Table::try_from(NodeConfig::default()).unwrap();
    for k in KEYS {
        assert!(
            doc.contains(&format!("`{}`", k.name)),
            "{} undocumented",
            k.path()
        );
        assert!(doc.contains(&k.env()), "{} undocumented", k.env());
        // A flag can set each key to its own default.
        if let Some(v) = defaults[k.section].as_table().unwrap().get(k.name) {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            let l = Loader::new().set(&k.path(), &text).load().unwrap();
            assert_eq!(l.config, NodeConfig::default(), "{}", k.path());
        }
    }
    // And every field of the typed config has a key (none is hidden).
    for (section, body) in &defaults {
        for name in body.as_table().unwrap().keys() {
            assert!(
                tern_config::keys::find(&format!("{section}.{name}")).is_some(),
                "{section}.{name} missing from KEYS"
            );
        }
    }
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    config: ConfigArgs,
    #[arg(long)]
    threads: Option<u64>,
}

/// The shared flags flatten into a daemon's clap parser. Capability: C2.
#[test]
fn clap_flags() {
    let cli = Cli::try_parse_from([
        "verifyd",
        "--config",
        "/etc/tern/a.toml",
        "--set",
        "verifyd.threads=2",
        "--set",
        "node.name=a",
        "--check",
        "--threads",
        "3",
    ])
    .unwrap();
    assert_eq!(cli.config.config, Some(PathBuf::from("/etc/tern/a.toml")));
    assert_eq!(cli.config.set, ["verifyd.threads=2", "node.name=a"]);
    assert!(cli.config.check);
    assert_eq!(cli.threads, Some(3));
    // A daemon's typed flag maps onto the loader and wins over --set.
    let mut l = Loader::new();
    for s in &cli.config.set {
        l = l.set_arg(s);
    }
    let loaded = l
        .set("verifyd.threads", &cli.threads.unwrap().to_string())
        .load()
        .unwrap();
    assert_eq!(loaded.config.verifyd.threads, Some(3));
    assert_eq!(loaded.config.node.name, "a");
}

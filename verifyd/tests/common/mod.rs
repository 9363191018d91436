//! Shared helpers for the integration tests: fixtures and daemons.
#![allow(dead_code, clippy::disallowed_methods, clippy::unwrap_used)] // test helpers: own the clock, unwrap

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use verifyd::client::{Item, Pool, PoolConfig};
use verifyd::fixtures::Corpus;
use verifyd::server::{Server, ServerConfig, ServerHandle};
use verifyd::{BackendKind, Verdict};

/// A small corpus: 3 keys, 12 signatures, `total` items, ~1 in 5 tampered.
pub fn corpus(total: usize) -> Corpus {
    Corpus::build(BackendKind::AwsLc, 3, 12, 64, total, 5, 42).unwrap()
}

pub fn items(c: &Corpus) -> (Vec<Item>, Vec<Verdict>) {
    c.items()
}

/// An in-process daemon on a socket in `dir`.
pub fn spawn_server(
    dir: &Path,
    name: &str,
    cfg: impl FnOnce(ServerConfig) -> ServerConfig,
) -> (PathBuf, ServerHandle, std::thread::JoinHandle<()>) {
    let path = dir.join(name);
    let mut c = ServerConfig::new(path.clone()).threads(2);
    c.admin_socket = Some(dir.join(format!("{name}.admin")));
    let c = cfg(c);
    let server = Server::bind(c).unwrap();
    let h = server.handle();
    let j = std::thread::spawn(move || server.run().unwrap());
    (path, h, j)
}

/// V2 scaffolding: an in-process daemon whose key cache holds one key, so
/// the corpus' three keys keep evicting each other, and a pool of small
/// requests that retries long enough to re-register them.
pub fn evicting_daemon(dir: &Path) -> (ServerHandle, std::thread::JoinHandle<()>, Pool) {
    let (path, h, j) = spawn_server(dir, "v.sock", |mut c| {
        c.key_capacity = 1;
        c
    });
    let pool = Pool::connect(
        vec![path],
        PoolConfig {
            max_request_items: 7,
            max_attempts: 50,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    (h, j, pool)
}

/// A real `verifyd` process.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
}

impl Daemon {
    pub fn start(dir: &Path, name: &str, threads: usize, extra: &[&str]) -> Daemon {
        let socket = dir.join(name);
        let child = Command::new(env!("CARGO_BIN_EXE_verifyd"))
            .arg("--socket")
            .arg(&socket)
            .arg("--threads")
            .arg(threads.to_string())
            .args(extra)
            .spawn()
            .unwrap();
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "verifyd did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon { child, socket }
    }
    /// A pool on this daemon alone, cutting requests at `max_request_items`.
    pub fn pool(&self, max_request_items: usize) -> Pool {
        Pool::connect(
            vec![self.socket.clone()],
            PoolConfig {
                max_request_items,
                ..PoolConfig::default()
            },
        )
        .unwrap()
    }
    pub fn admin(&self) -> PathBuf {
        let mut s = self.socket.clone().into_os_string();
        s.push(".admin");
        PathBuf::from(s)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

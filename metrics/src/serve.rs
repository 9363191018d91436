//! The scrape endpoint: `GET /metrics` on a loopback TCP listener.
//!
//! Small on purpose, and bounded like every Tern listener: at most
//! [`ServeLimits::max_connections`] scrapes at once (more are closed at
//! once and counted), a whole exchange must finish within
//! [`ServeLimits::deadline`] (a silent client is dropped and counted), and
//! the request head is read into a fixed 8 KiB buffer and parsed with
//! `httparse` (a larger head is `431`). Nothing is allocated per request
//! beyond the response. Accept errors (e.g. `EMFILE`) back off briefly
//! instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::{CONTENT_TYPE, Exposition, MetricsError};

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Pause after a failed accept (fd exhaustion and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Bounds of the scrape endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// Scrapes served at once (default 8).
    pub max_connections: usize,
    /// Time one scrape may take, request to last byte (default 5 s).
    pub deadline: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 8,
            deadline: Duration::from_secs(5),
        }
    }
}

/// Counters of the endpoint, shared with the serving task.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// `200` responses.
    pub served: AtomicU64,
    /// `404`/`405`/`400`/`431` responses.
    pub rejected: AtomicU64,
    /// Connections closed because `max_connections` were busy.
    pub busy: AtomicU64,
    /// Exchanges that missed the deadline.
    pub timed_out: AtomicU64,
    /// Failed accepts.
    pub accept_errors: AtomicU64,
}

/// Binds `addr` for [`serve`], refusing any non-loopback address.
pub fn bind_loopback(addr: SocketAddr) -> Result<std::net::TcpListener, MetricsError> {
    if !addr.ip().is_loopback() {
        return Err(MetricsError::NotLoopback(addr));
    }
    let l =
        std::net::TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| MetricsError::Bind { addr, source })?;
    Ok(l)
}

/// A daemon's endpoint: serves `metrics` on `listener` (as bound by
/// [`bind_loopback`]) with the default [`ServeLimits`] until `stop`
/// resolves, calling `sample` at once and then every `every` to refresh
/// the values the daemon keeps elsewhere (plain atomics, state under its
/// own lock, which a scrape should not take).
pub async fn serve_sampled(
    listener: std::net::TcpListener,
    metrics: Exposition,
    every: Duration,
    mut sample: impl FnMut(),
    stop: impl std::future::Future<Output = ()>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(error) => {
            tracing::warn!(%error, "metrics listener unusable; metrics off");
            return;
        }
    };
    let stats = Arc::new(ServeStats::default());
    let server = serve(listener, Arc::new(metrics), ServeLimits::default(), stats);
    tokio::pin!(server);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = &mut server => return,
            _ = tick.tick() => sample(),
            () = &mut stop => return,
        }
    }
}

/// Serves `metrics` on `listener` until the task is dropped or aborted.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Exposition>,
    limits: ServeLimits,
    stats: Arc<ServeStats>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(error) => {
                stats.accept_errors.fetch_add(1, Relaxed);
                tracing::warn!(%error, "metrics accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            stats.busy.fetch_add(1, Relaxed);
            tracing::debug!(%peer, "metrics scrape refused: busy");
            continue; // dropping the stream closes it
        };
        let metrics = Arc::clone(&metrics);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(limits.deadline, exchange(stream, &metrics)).await {
                Ok(Ok(true)) => {
                    stats.served.fetch_add(1, Relaxed);
                }
                Ok(Ok(false)) => {
                    stats.rejected.fetch_add(1, Relaxed);
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "metrics scrape failed"),
                Err(_) => {
                    stats.timed_out.fetch_add(1, Relaxed);
                    tracing::debug!(%peer, "metrics scrape timed out");
                }
            }
        });
    }
}

/// What the request head asks for.
enum Ask {
    Metrics { head_only: bool },
    Status(&'static str),
}

fn classify(head: &[u8]) -> Option<Ask> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return None,
        Err(httparse::Error::TooManyHeaders) => {
            return Some(Ask::Status("431 Request Header Fields Too Large"));
        }
        Err(_) => return Some(Ask::Status("400 Bad Request")),
    }
    let path = req.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or(path);
    Some(match (req.method.unwrap_or(""), path) {
        ("GET", "/metrics" | "/") => Ask::Metrics { head_only: false },
        ("HEAD", "/metrics" | "/") => Ask::Metrics { head_only: true },
        (_, "/metrics" | "/") => Ask::Status("405 Method Not Allowed"),
        _ => Ask::Status("404 Not Found"),
    })
}

/// Reads one request head and answers it; `Ok(true)` when metrics were
/// served.
async fn exchange(mut stream: TcpStream, metrics: &Exposition) -> std::io::Result<bool> {
    let mut head = [0u8; MAX_HEAD];
    let mut len = 0;
    let ask = loop {
        if len == head.len() {
            break Ask::Status("431 Request Header Fields Too Large");
        }
        let n = stream.read(&mut head[len..]).await?;
        if n == 0 {
            return Ok(false);
        }
        len += n;
        if let Some(ask) = classify(&head[..len]) {
            break ask;
        }
    };
    let (status, body, head_only) = match ask {
        Ask::Metrics { head_only } => match metrics.render() {
            Ok(body) => ("200 OK", body, head_only),
            Err(error) => {
                tracing::warn!(%error, "metrics encoding failed");
                ("500 Internal Server Error", String::new(), false)
            }
        },
        Ask::Status(s) => (s, String::new(), false),
    };
    let served = status.starts_with("200");
    let content_type = if served { CONTENT_TYPE } else { "text/plain" };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await?;
    Ok(served)
}

//! Address lookup: pluggable [`Resolver`]s queried in parallel, and a
//! happy-eyeballs style dial over every address they surface.
//!
//! [`connect_any`] asks every resolver at once. As each answers, its
//! addresses join one queue (deduplicated, bounded by
//! [`LookupConfig::max_addrs`]); dials start from the first address without
//! waiting for slower resolvers, a new one every [`LookupConfig::stagger`]
//! while earlier ones are still pending (RFC 8305's connection attempt
//! delay) or at once when one fails. The first dial that succeeds wins and
//! the others are dropped. A resolver that errors, panics or times out is
//! recorded and never aborts the others; every address of every resolver is
//! tried until one connects. When none does, the error lists every
//! resolver failure and every dial failure.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::identity::PeerId;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a resolver gave no addresses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The resolver knows nothing about the peer.
    #[error("peer not found")]
    NotFound,
    /// The resolver failed.
    #[error("lookup failed: {0}")]
    Failed(String),
    /// The resolver did not answer within [`LookupConfig::resolve_timeout`].
    #[error("lookup timed out")]
    TimedOut,
    /// The resolver's task panicked.
    #[error("resolver panicked")]
    Panicked,
}

/// A source of addresses for peers (a static table, a DHT, mDNS, a
/// rendezvous server...).
pub trait Resolver: Send + Sync + 'static {
    /// Name for diagnostics.
    fn name(&self) -> &str;
    /// Addresses where `peer` may be reached.
    fn resolve(&self, peer: PeerId) -> BoxFuture<'_, Result<Vec<SocketAddr>, ResolveError>>;
}

/// Something that dials an address (the endpoint, or a test fake).
pub trait Dialer: Send + Sync + 'static {
    /// The connection a successful dial yields.
    type Conn: Send + 'static;
    /// The error a failed dial yields.
    type Error: Send + 'static;
    /// Dials `peer` at `addr`.
    fn dial(
        &self,
        addr: SocketAddr,
        peer: PeerId,
    ) -> BoxFuture<'_, Result<Self::Conn, Self::Error>>;
}

/// Lookup and dial settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupConfig {
    /// Time each resolver gets. Default 3 s.
    pub resolve_timeout: Duration,
    /// Delay before the next address is dialled while earlier dials are
    /// pending. Default 250 ms (RFC 8305).
    pub stagger: Duration,
    /// Dials pending at once. Default 8.
    pub max_parallel_dials: usize,
    /// Distinct addresses taken from all resolvers together; more are
    /// dropped and counted. Default 32.
    pub max_addrs: usize,
    /// Time the whole lookup and dial may take. Default 10 s.
    pub timeout: Duration,
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            resolve_timeout: Duration::from_secs(3),
            stagger: Duration::from_millis(250),
            max_parallel_dials: 8,
            max_addrs: 32,
            timeout: Duration::from_secs(10),
        }
    }
}

/// A successful [`connect_any`].
#[derive(Debug)]
pub struct Connected<C> {
    /// The connection.
    pub conn: C,
    /// The address that connected.
    pub addr: SocketAddr,
    /// Every address dialled, in order.
    pub tried: Vec<SocketAddr>,
    /// Resolvers that failed, with why.
    pub resolver_errors: Vec<(String, ResolveError)>,
    /// Addresses dropped over `max_addrs`.
    pub dropped_addrs: usize,
}

/// A failed [`connect_any`]: everything that went wrong.
#[derive(Debug, thiserror::Error)]
#[error("no address of {peer} connected ({} resolver errors, {} failed dials{})",
    .resolver_errors.len(), .dial_errors.len(), if *.timed_out { ", timed out" } else { "" })]
pub struct LookupError<E> {
    /// The peer.
    pub peer: PeerId,
    /// Resolvers that failed, with why.
    pub resolver_errors: Vec<(String, ResolveError)>,
    /// Addresses dialled and why each failed.
    pub dial_errors: Vec<(SocketAddr, E)>,
    /// Every address dialled, in order, including dials the timeout cut off.
    pub tried: Vec<SocketAddr>,
    /// Addresses dropped over `max_addrs`.
    pub dropped_addrs: usize,
    /// The overall timeout ended the lookup.
    pub timed_out: bool,
}

/// One finished dial: the address and its result.
type DialDone<D> = (
    SocketAddr,
    Result<<D as Dialer>::Conn, <D as Dialer>::Error>,
);

/// Resolves `peer` with every resolver in parallel and dials what they
/// return until one address connects (see the module docs).
pub async fn connect_any<D: Dialer>(
    resolvers: &[Arc<dyn Resolver>],
    peer: PeerId,
    dialer: Arc<D>,
    cfg: LookupConfig,
) -> Result<Connected<D::Conn>, LookupError<D::Error>>
where
    D::Error: std::fmt::Debug,
{
    let deadline = Instant::now() + cfg.timeout;
    let mut lookups = JoinSet::new();
    let mut names = Vec::with_capacity(resolvers.len());
    for (i, r) in resolvers.iter().enumerate() {
        names.push(r.name().to_owned());
        let r = r.clone();
        let t = cfg.resolve_timeout;
        lookups.spawn(async move {
            let res = match tokio::time::timeout(t, r.resolve(peer)).await {
                Ok(res) => res,
                Err(_) => Err(ResolveError::TimedOut),
            };
            (i, res)
        });
    }
    let mut queue = VecDeque::new();
    let mut seen = HashSet::new();
    let mut tried = Vec::new();
    let mut resolver_errors = Vec::new();
    let mut dial_errors = Vec::new();
    let mut dropped_addrs = 0;
    let mut dials: JoinSet<DialDone<D>> = JoinSet::new();
    let mut next_dial = Instant::now();
    let timed_out = loop {
        let now = Instant::now();
        while !queue.is_empty()
            && dials.len() < cfg.max_parallel_dials.max(1)
            && (dials.is_empty() || now >= next_dial)
        {
            let Some(addr) = queue.pop_front() else {
                break;
            };
            tried.push(addr);
            tracing::debug!(peer = %peer.short(), %addr, "lookup: dialling");
            let d = dialer.clone();
            dials.spawn(async move { (addr, d.dial(addr, peer).await) });
            next_dial = now + cfg.stagger;
        }
        if lookups.is_empty() && dials.is_empty() && queue.is_empty() {
            break false;
        }
        let stagger_armed = !queue.is_empty() && !dials.is_empty();
        tokio::select! {
            Some(r) = lookups.join_next(), if !lookups.is_empty() => match r {
                Ok((i, Ok(addrs))) => {
                    for a in addrs {
                        if seen.len() >= cfg.max_addrs {
                            dropped_addrs += 1;
                        } else if seen.insert(a) {
                            queue.push_back(a);
                        }
                    }
                    tracing::debug!(peer = %peer.short(), resolver = %names[i], "lookup: answered");
                }
                Ok((i, Err(e))) => {
                    tracing::debug!(peer = %peer.short(), resolver = %names[i], error = %e, "lookup: resolver failed");
                    resolver_errors.push((names[i].clone(), e));
                }
                Err(_) => resolver_errors.push(("(panicked)".to_owned(), ResolveError::Panicked)),
            },
            Some(d) = dials.join_next(), if !dials.is_empty() => match d {
                Ok((addr, Ok(conn))) => {
                    return Ok(Connected { conn, addr, tried, resolver_errors, dropped_addrs });
                }
                Ok((addr, Err(e))) => {
                    dial_errors.push((addr, e));
                    // A failure frees the next address at once.
                    next_dial = Instant::now();
                }
                Err(_) => next_dial = Instant::now(),
            },
            () = tokio::time::sleep_until(next_dial), if stagger_armed => {}
            () = tokio::time::sleep_until(deadline) => {
                break true;
            }
        }
    };
    Err(LookupError {
        peer,
        resolver_errors,
        dial_errors,
        tried,
        dropped_addrs,
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A resolver that answers after `delay`.
    struct Fake {
        name: &'static str,
        delay: Duration,
        answer: Result<Vec<SocketAddr>, ResolveError>,
        panic: bool,
    }

    impl Resolver for Fake {
        fn name(&self) -> &str {
            self.name
        }
        fn resolve(&self, _peer: PeerId) -> BoxFuture<'_, Result<Vec<SocketAddr>, ResolveError>> {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                assert!(!self.panic, "resolver bug");
                self.answer.clone()
            })
        }
    }

    /// A dialer where each port behaves as scripted: connects after a
    /// delay, fails after a delay, or never answers.
    #[derive(Default)]
    struct FakeDialer {
        good: Vec<u16>,
        hang: Vec<u16>,
        log: Mutex<Vec<(SocketAddr, Instant)>>,
    }

    impl Dialer for FakeDialer {
        type Conn = u16;
        type Error = &'static str;
        fn dial(&self, a: SocketAddr, _peer: PeerId) -> BoxFuture<'_, Result<u16, &'static str>> {
            self.log.lock().unwrap().push((a, Instant::now()));
            Box::pin(async move {
                if self.hang.contains(&a.port()) {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                if self.good.contains(&a.port()) {
                    Ok(a.port())
                } else {
                    Err("refused")
                }
            })
        }
    }

    fn fake(
        name: &'static str,
        ms: u64,
        answer: Result<Vec<SocketAddr>, ResolveError>,
    ) -> Arc<dyn Resolver> {
        Arc::new(Fake {
            name,
            delay: Duration::from_millis(ms),
            answer,
            panic: false,
        })
    }

    /// T10: three resolvers, one erroring and one giving three addresses:
    /// every address of every resolver is tried, the error is reported, and
    /// the good address (the last one tried) wins.
    #[tokio::test(start_paused = true)]
    async fn three_resolvers_every_address_tried() {
        let resolvers = vec![
            fake("broken", 0, Err(ResolveError::Failed("dns down".into()))),
            fake("dht", 10, Ok(vec![addr(1), addr(2), addr(3)])),
            fake("static", 0, Ok(vec![addr(9)])),
        ];
        let d = Arc::new(FakeDialer {
            good: vec![3],
            ..FakeDialer::default()
        });
        let c = connect_any(
            &resolvers,
            PeerId([1; 32]),
            d.clone(),
            LookupConfig::default(),
        )
        .await
        .unwrap();
        assert_eq!(c.conn, 3);
        assert_eq!(c.addr, addr(3));
        assert_eq!(c.tried, vec![addr(9), addr(1), addr(2), addr(3)]);
        assert_eq!(
            c.resolver_errors,
            vec![("broken".to_owned(), ResolveError::Failed("dns down".into()))]
        );
        assert_eq!(d.log.lock().unwrap().len(), 4);
    }

    /// T10: a dial that never answers does not hold up the next address:
    /// after the stagger delay the next is dialled and wins.
    #[tokio::test(start_paused = true)]
    async fn stagger_overtakes_a_hanging_dial() {
        let resolvers = vec![fake("a", 0, Ok(vec![addr(1), addr(2)]))];
        let d = Arc::new(FakeDialer {
            good: vec![2],
            hang: vec![1],
            ..FakeDialer::default()
        });
        let t0 = Instant::now();
        let c = connect_any(
            &resolvers,
            PeerId([1; 32]),
            d.clone(),
            LookupConfig::default(),
        )
        .await
        .unwrap();
        assert_eq!(c.addr, addr(2));
        let log = d.log.lock().unwrap();
        assert_eq!(log[1].1 - t0, LookupConfig::default().stagger);
    }

    /// T10: a panicking and a hanging resolver never abort the others; when
    /// nothing connects, the error lists every resolver failure and every
    /// failed dial, duplicates across resolvers dialled once.
    #[tokio::test(start_paused = true)]
    async fn failures_are_all_reported() {
        let resolvers = vec![
            Arc::new(Fake {
                name: "bug",
                delay: Duration::ZERO,
                answer: Ok(vec![]),
                panic: true,
            }) as Arc<dyn Resolver>,
            fake("slow", 60_000, Ok(vec![addr(7)])),
            fake("a", 0, Ok(vec![addr(1), addr(2)])),
            fake("b", 1, Ok(vec![addr(2)])),
            fake("none", 0, Err(ResolveError::NotFound)),
        ];
        let d = Arc::new(FakeDialer::default());
        let e = connect_any(
            &resolvers,
            PeerId([1; 32]),
            d.clone(),
            LookupConfig::default(),
        )
        .await
        .unwrap_err();
        assert!(!e.timed_out);
        let mut errs: Vec<ResolveError> =
            e.resolver_errors.iter().map(|(_, e)| e.clone()).collect();
        errs.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            errs,
            vec![
                ResolveError::NotFound,
                ResolveError::Panicked,
                ResolveError::TimedOut
            ]
        );
        let dialled: Vec<SocketAddr> = e.dial_errors.iter().map(|(a, _)| *a).collect();
        assert_eq!(dialled, vec![addr(1), addr(2)]);
        assert_eq!(d.log.lock().unwrap().len(), 2);
    }

    /// T10: when the overall timeout ends a lookup whose dials hang, the
    /// error still names every address dialled and the ones over
    /// `max_addrs`, so diagnostics show where the time went.
    #[tokio::test(start_paused = true)]
    async fn a_timed_out_lookup_lists_the_hanging_dials() {
        let resolvers = vec![fake("a", 0, Ok(vec![addr(1), addr(2), addr(3)]))];
        let d = Arc::new(FakeDialer {
            hang: vec![1, 2],
            ..FakeDialer::default()
        });
        let cfg = LookupConfig {
            max_addrs: 2,
            timeout: Duration::from_secs(2),
            ..LookupConfig::default()
        };
        let e = connect_any(&resolvers, PeerId([1; 32]), d, cfg)
            .await
            .unwrap_err();
        assert!(e.timed_out);
        assert!(e.dial_errors.is_empty(), "no dial finished");
        assert_eq!(e.tried, vec![addr(1), addr(2)]);
        assert_eq!(e.dropped_addrs, 1);
    }
}

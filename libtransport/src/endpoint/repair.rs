//! Repair dials, driver glue: runs the sans-IO [`RepairPolicy`] for sends
//! that find no live connection, and executes its dials with
//! [`resolve::connect_any`](crate::resolve::connect_any).
//!
//! * [`connect_peer`] is what `Endpoint::send`, `open_bi`,
//!   `send_with_receive_ack` and `Endpoint::connect_peer` call: a live
//!   connection is returned at once; otherwise the policy decides — start a
//!   dial, join the one running for that peer (however many sends ask, one
//!   dial runs), wait for a slot, or refuse (backoff, queue full, unknown
//!   peer). Callers wait on a oneshot the dial's end completes.
//! * A dial is a task owned by the endpoint, not by the caller: a caller
//!   that gives up does not cancel it for the others. It asks the address
//!   book (the peer's confirmed addresses) and every configured
//!   [`Resolver`] in parallel and dials what they return happy-eyeballs
//!   style until one address connects or the policy's deadline passes.
//! * A drop guard reports a dial whose task ended without reporting (a
//!   panic), so a dial slot can never leak; the policy's own deadline
//!   (`handle_timeout`, run on every request) is the second line.
//! * Only an address that connected and proved the peer's identity enters
//!   the book; resolver answers are never stored unproven.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::Instrument;

use super::handle::Connection;
use super::state::{Shared, State};
use super::{Error, api};
use crate::identity::PeerId;
use crate::proto::repair::{
    AddressBook, AddressBookConfig, AddressBookCounters, DialFailure, DialId, DialRequest, Repair,
    RepairConfig, RepairCounters, RepairError, RepairOutput, RepairPolicy,
};
use crate::resolve::{self, BoxFuture, Dialer, LookupConfig, LookupError, ResolveError, Resolver};

/// Resolvers an endpoint accepts; more is a configuration error.
pub const MAX_RESOLVERS: usize = 16;

type Waiter = oneshot::Sender<Result<SocketAddr, RepairError>>;

/// The endpoint's repair state (inside `State`, under its lock).
pub(crate) struct RepairState {
    policy: RepairPolicy,
    book: AddressBook,
    resolvers: Arc<[Arc<dyn Resolver>]>,
    lookup: LookupConfig,
    /// Sends waiting for each running or queued dial. Keys are bounded by
    /// the policy's dials; each list by the callers waiting now (closed
    /// senders are pruned on every push).
    waiters: HashMap<DialId, Vec<Waiter>>,
    last_lookup: Option<LookupReport>,
}

impl RepairState {
    pub(crate) fn new(cfg: RepairConfig, book: AddressBookConfig) -> Self {
        Self {
            policy: RepairPolicy::new(cfg),
            book: AddressBook::new(book),
            resolvers: Arc::new([]),
            lookup: LookupConfig::default(),
            waiters: HashMap::new(),
            last_lookup: None,
        }
    }

    /// A connection to `peer` at `addr` proved the peer: a known address.
    pub(crate) fn confirm(&mut self, peer: PeerId, addr: SocketAddr) {
        self.book.confirm(peer, addr);
    }

    pub(crate) fn learn(&mut self, peer: PeerId, addrs: &[SocketAddr]) {
        self.book.learn(peer, addrs);
    }

    pub(crate) fn forget(&mut self, peer: &PeerId) {
        self.book.remove(peer);
    }

    pub(crate) fn addrs(&self, peer: &PeerId) -> Vec<SocketAddr> {
        self.book.addrs(peer).map(<[_]>::to_vec).unwrap_or_default()
    }

    pub(crate) fn set_resolvers(
        &mut self,
        resolvers: Vec<Arc<dyn Resolver>>,
        lookup: LookupConfig,
    ) {
        self.resolvers = resolvers.into();
        self.lookup = lookup;
    }

    pub(crate) fn diag(&self) -> RepairDiag {
        RepairDiag {
            counters: self.policy.counters(),
            book: self.book.counters(),
            known_peers: self.book.len(),
            running: self.policy.running(),
            queued: self.policy.queued(),
            resolvers: self.resolvers.iter().map(|r| r.name().to_owned()).collect(),
            last_lookup: self.last_lookup.clone(),
        }
    }
}

/// Repair diagnostics.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RepairDiag {
    /// Requests, dials, joins, refusals by reason.
    pub counters: RepairCounters,
    /// Address book evictions and dropped addresses.
    pub book: AddressBookCounters,
    /// Peers in the address book.
    pub known_peers: usize,
    /// Repair dials running.
    pub running: usize,
    /// Repair dials waiting for a slot.
    pub queued: usize,
    /// Configured resolvers, by name.
    pub resolvers: Vec<String>,
    /// The most recent repair dial's lookup.
    pub last_lookup: Option<LookupReport>,
}

/// What one repair dial's lookup did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LookupReport {
    /// The peer (hex).
    pub peer: String,
    /// Every address dialled, in order.
    pub tried: Vec<SocketAddr>,
    /// The address that connected.
    pub connected: Option<SocketAddr>,
    /// Resolvers that failed: name and why.
    pub resolver_errors: Vec<(String, String)>,
    /// Addresses beyond the lookup's `max_addrs`, not dialled.
    pub dropped_addrs: usize,
    /// The lookup ran out of time.
    pub timed_out: bool,
}

/// The live connection to `peer`, repairing it (one dial per peer,
/// bounded, with backoff) when there is none. See the module docs.
pub(crate) async fn connect_peer(ep: &Arc<Shared>, peer: PeerId) -> Result<Connection, Error> {
    if let Some(c) = api::live(ep, &peer) {
        return Ok(c);
    }
    let rx = {
        let mut st = ep.lock();
        if !st.open_for_work() {
            return Err(Error::EndpointClosed);
        }
        let now = crate::io::now();
        let r = &mut st.repair;
        r.policy.handle_timeout(&mut r.book, now);
        let asked = if r.resolvers.is_empty() {
            r.policy.request(peer, &r.book, now)
        } else {
            r.policy.request_resolvable(peer, &mut r.book, now)
        };
        let rx = match asked {
            Ok(Repair::Dial(req)) => {
                let dial = req.dial;
                spawn_dial(ep, &st, req);
                wait_on(&mut st.repair, dial)
            }
            Ok(Repair::Join(dial) | Repair::Queued(dial)) => wait_on(&mut st.repair, dial),
            Err(e) => {
                drain_outputs(ep, &mut st);
                return Err(match e {
                    RepairError::UnknownPeer => Error::NotConnected(peer),
                    e => Error::Repair(e),
                });
            }
        };
        drain_outputs(ep, &mut st);
        rx
    };
    match rx.await {
        Ok(Ok(_)) => api::live(ep, &peer).ok_or(Error::NotConnected(peer)),
        Ok(Err(RepairError::DialFailed(DialFailure::EndpointClosed))) | Err(_) => {
            Err(Error::EndpointClosed)
        }
        Ok(Err(RepairError::UnknownPeer)) => Err(Error::NotConnected(peer)),
        Ok(Err(e)) => Err(Error::Repair(e)),
    }
}

fn wait_on(
    r: &mut RepairState,
    dial: DialId,
) -> oneshot::Receiver<Result<SocketAddr, RepairError>> {
    let (tx, rx) = oneshot::channel();
    let list = r.waiters.entry(dial).or_default();
    list.retain(|w| !w.is_closed());
    list.push(tx);
    rx
}

/// Executes the policy's notifications: starts dials that got a slot and
/// answers the waiters of dials that ended.
fn drain_outputs(ep: &Arc<Shared>, st: &mut State) {
    while let Some(o) = st.repair.policy.poll_output() {
        match o {
            RepairOutput::Start(req) => spawn_dial(ep, st, req),
            RepairOutput::Finished { dial, result, .. } => {
                for w in st.repair.waiters.remove(&dial).unwrap_or_default() {
                    // A caller that gave up dropped its receiver: nothing to
                    // tell it.
                    let _ = w.send(result);
                }
            }
        }
    }
}

fn spawn_dial(ep: &Arc<Shared>, st: &State, req: DialRequest) {
    let resolvers = st.repair.resolvers.clone();
    let lookup = st.repair.lookup;
    let span = tracing::debug_span!("repair_dial", peer = %req.peer.short(), dial = ?req.dial);
    let mut guard = Report {
        ep: ep.clone(),
        dial: req.dial,
        done: false,
    };
    tokio::spawn(
        async move {
            let (result, report) = run_dial(&guard.ep, &req, &resolvers, lookup).await;
            guard.done(result, Some(report));
        }
        .instrument(span),
    );
}

/// Reports a dial's end to the policy exactly once, also when its task
/// panicked or was dropped (then as unreachable).
struct Report {
    ep: Arc<Shared>,
    dial: DialId,
    done: bool,
}

impl Report {
    fn done(&mut self, result: Result<SocketAddr, DialFailure>, report: Option<LookupReport>) {
        self.done = true;
        let mut st = self.ep.lock();
        let now = crate::io::now();
        let r = &mut st.repair;
        r.policy
            .handle_dial_done(self.dial, result, &mut r.book, now);
        if report.is_some() {
            r.last_lookup = report;
        }
        drain_outputs(&self.ep, &mut st);
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if !self.done {
            self.done(Err(DialFailure::Unreachable), None);
        }
    }
}

/// The book's addresses for the peer, as the first resolver.
struct Known(Vec<SocketAddr>);

impl Resolver for Known {
    fn name(&self) -> &str {
        "address-book"
    }
    fn resolve(&self, _peer: PeerId) -> BoxFuture<'_, Result<Vec<SocketAddr>, ResolveError>> {
        let a = self.0.clone();
        Box::pin(async move {
            if a.is_empty() {
                Err(ResolveError::NotFound)
            } else {
                Ok(a)
            }
        })
    }
}

/// Dials through the endpoint's own `connect`.
struct EndpointDialer(Arc<Shared>);

impl Dialer for EndpointDialer {
    type Conn = Connection;
    type Error = Error;
    fn dial(&self, addr: SocketAddr, peer: PeerId) -> BoxFuture<'_, Result<Connection, Error>> {
        Box::pin(api::connect(&self.0, addr, peer))
    }
}

async fn run_dial(
    ep: &Arc<Shared>,
    req: &DialRequest,
    resolvers: &[Arc<dyn Resolver>],
    lookup: LookupConfig,
) -> (Result<SocketAddr, DialFailure>, LookupReport) {
    let mut all: Vec<Arc<dyn Resolver>> = Vec::with_capacity(resolvers.len() + 1);
    all.push(Arc::new(Known(req.addrs.clone())));
    all.extend(resolvers.iter().cloned());
    let mut cfg = lookup;
    cfg.timeout = cfg
        .timeout
        .min(req.deadline.saturating_duration_since(crate::io::now()));
    let peer = req.peer;
    match resolve::connect_any(&all, peer, Arc::new(EndpointDialer(ep.clone())), cfg).await {
        Ok(c) => {
            // The live connection's own address, not the address whose dial
            // finished first: a dial resolves with whichever connection to
            // the peer went live, possibly another address's.
            let addr = c.conn.remote_address();
            let report = LookupReport {
                peer: peer.to_string(),
                tried: c.tried,
                connected: Some(addr),
                resolver_errors: named(&c.resolver_errors),
                dropped_addrs: c.dropped_addrs,
                timed_out: false,
            };
            (Ok(addr), report)
        }
        Err(e) => {
            let failure = failure_of(&e);
            let report = LookupReport {
                peer: peer.to_string(),
                tried: e.tried.clone(),
                connected: None,
                resolver_errors: named(&e.resolver_errors),
                dropped_addrs: e.dropped_addrs,
                timed_out: e.timed_out,
            };
            tracing::debug!(error = %e, "repair dial failed");
            (Err(failure), report)
        }
    }
}

fn named(errs: &[(String, ResolveError)]) -> Vec<(String, String)> {
    errs.iter()
        .map(|(n, e)| (n.clone(), e.to_string()))
        .collect()
}

/// The most telling failure among the dials: the endpoint closing, then a
/// key that was not the peer's, else unreachable.
fn failure_of(e: &LookupError<Error>) -> DialFailure {
    let errs = || e.dial_errors.iter().map(|(_, e)| e);
    if errs().any(|e| matches!(e, Error::EndpointClosed)) {
        DialFailure::EndpointClosed
    } else if errs().any(|e| matches!(e, Error::PeerMismatch { .. })) {
        DialFailure::IdentityMismatch
    } else {
        DialFailure::Unreachable
    }
}

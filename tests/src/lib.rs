//! Whole Tern nodes for the multi-process tests in `tests/tests/`: a
//! [`Mesh`] of N nodes on loopback, each node three spawned binaries
//! (relayd, verifyd, gossipd) in its own temp dir, every node's relayd
//! dialling the relayd of every node started before it, so the nodes are
//! fully connected. Every child is SIGKILLed when the mesh is dropped.
//!
//! A test kills and restarts one daemon of one node with
//! [`Mesh::kill`] and [`Mesh::restart`], and talks to a node as an
//! application would, through [`Mesh::app`] (gossipd's blocking client on
//! its application socket).
// Test harness: a broken environment is a panic with its reason.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::disallowed_methods)]

use gossipd::client::Client;
use test_support::daemon::{Killed, PATIENCE};
pub use test_support::node::{Node, eventually};

/// One of a node's daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// relayd: UDP, QUIC connections, the relay session.
    Relayd,
    /// gossipd: gossip, DMs, the application API.
    Gossipd,
    /// verifyd: signature verification.
    Verifyd,
}

impl Daemon {
    /// The daemon's name (its binary, its admin socket's prefix).
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Relayd => "relayd",
            Daemon::Gossipd => "gossipd",
            Daemon::Verifyd => "verifyd",
        }
    }
}

/// A node and its running daemons.
#[derive(Debug)]
pub struct Member {
    /// The node's directory, config and sockets.
    pub node: Node,
    relayd: Option<Killed>,
    verifyd: Option<Killed>,
    gossipd: Option<Killed>,
    /// The node's peer id (gossipd's `Status`).
    pub id: [u8; 32],
}

/// N fully connected nodes on loopback.
#[derive(Debug)]
pub struct Mesh {
    /// The nodes, in start order.
    pub members: Vec<Member>,
}

impl Mesh {
    /// Starts `n` nodes and waits until every gossipd is attached to its
    /// relayd, sees the other `n - 1` nodes connected and uses its verifyd.
    pub fn start(n: usize) -> Mesh {
        let mut members: Vec<Member> = Vec::with_capacity(n);
        for _ in 0..n {
            let earlier: Vec<&Node> = members.iter().map(|m| &m.node).collect();
            let node = if earlier.is_empty() {
                Node::new()
            } else {
                Node::peering(&earlier)
            };
            let relayd = node.relayd();
            let verifyd = node.verifyd();
            let gossipd = node.gossipd();
            members.push(Member {
                node,
                relayd: Some(relayd),
                verifyd: Some(verifyd),
                gossipd: Some(gossipd),
                id: [0; 32],
            });
        }
        let mut mesh = Mesh { members };
        for i in 0..n {
            mesh.wait_ready(i);
            let (id, _) = mesh.app(i).status().expect("gossipd status");
            mesh.members[i].id = id;
        }
        mesh
    }

    /// Waits until node `i`'s gossipd is attached, sees every other node
    /// connected and has its verifyd.
    pub fn wait_ready(&self, i: usize) {
        let others = self.members.len() - 1;
        self.members[i].node.wait(
            "gossipd",
            "attached, all peers connected, verifyd in use",
            |j| {
                j["relayd_attached"] == true
                    && j["connected_peers"].as_u64() == Some(others as u64)
                    && j["verifyd"]["connected"] == 1
            },
        );
    }

    /// Node `i`'s peer id.
    pub fn id(&self, i: usize) -> [u8; 32] {
        self.members[i].id
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.members[i].node
    }

    /// A new application connection to node `i`'s gossipd.
    pub fn app(&self, i: usize) -> Client {
        Client::connect(&self.members[i].node.sock("gossipd.sock"), PATIENCE)
            .expect("connecting to gossipd's application socket")
    }

    /// SIGKILLs daemon `d` of node `i` (no goodbye on any socket).
    pub fn kill(&mut self, i: usize, d: Daemon) {
        let m = &mut self.members[i];
        let slot = match d {
            Daemon::Relayd => &mut m.relayd,
            Daemon::Gossipd => &mut m.gossipd,
            Daemon::Verifyd => &mut m.verifyd,
        };
        assert!(slot.is_some(), "{} of node {i} is not running", d.name());
        drop(slot.take());
    }

    /// Starts daemon `d` of node `i` again (returns once its admin socket
    /// answers).
    pub fn restart(&mut self, i: usize, d: Daemon) {
        let m = &mut self.members[i];
        let (slot, child) = match d {
            Daemon::Relayd => (&mut m.relayd, m.node.relayd()),
            Daemon::Gossipd => (&mut m.gossipd, m.node.gossipd()),
            Daemon::Verifyd => (&mut m.verifyd, m.node.verifyd()),
        };
        assert!(slot.is_none(), "{} of node {i} is running", d.name());
        *slot = Some(child);
    }

    /// The pid of daemon `d` of node `i`, if it runs.
    pub fn pid(&self, i: usize, d: Daemon) -> Option<u32> {
        let m = &self.members[i];
        match d {
            Daemon::Relayd => m.relayd.as_ref(),
            Daemon::Gossipd => m.gossipd.as_ref(),
            Daemon::Verifyd => m.verifyd.as_ref(),
        }
        .map(|k| k.0.id())
    }
}

/// Resident set size of process `pid` in KiB (`VmRSS` of
/// `/proc/<pid>/status`), `None` when it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

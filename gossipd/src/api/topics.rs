//! Topic joins counted across connections. A connection's `Join` counts
//! once per topic (again is a no-op for the count, but bootstraps the
//! overlay again from the peers connected now); its `Leave`, or its
//! closing, gives the count back, and the last one leaves the overlay.
//! [`Api::topics`] (rejoined after a relayd restart) holds exactly the
//! topics with a count.
//!
//! One async lock is held across each change and its runtime call, so a
//! `Leave` racing a `Join` of the same topic reaches the runtime in the
//! order the count changed.

use std::collections::HashMap;

use libgossip::proto::TopicId;
use libgossip::runtime::RuntimeError;

use super::Api;

/// A joined topic.
#[derive(Debug)]
struct Joined {
    name: String,
    connections: usize,
}

/// The joined topics (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Joins {
    topics: tokio::sync::Mutex<HashMap<TopicId, Joined>>,
}

impl Api {
    /// Joins `topic` (named `name`) for a connection, bootstrapping from
    /// the peers connected now; `new` when the connection had not joined
    /// it (then it counts).
    pub(crate) async fn join_topic(
        &self,
        topic: TopicId,
        name: &str,
        new: bool,
    ) -> Result<(), RuntimeError> {
        let mut joins = self.joins.topics.lock().await;
        self.gossip.join(topic, &self.link.connected()).await?;
        if new {
            joins
                .entry(topic)
                .or_insert_with(|| Joined {
                    name: name.to_owned(),
                    connections: 0,
                })
                .connections += 1;
            crate::lock(&self.topics).insert(topic.0);
        }
        Ok(())
    }

    /// Gives back one connection's join of `topic`; the last leaves it.
    pub(crate) async fn leave_topic(&self, topic: TopicId) {
        let mut joins = self.joins.topics.lock().await;
        let Some(j) = joins.get_mut(&topic) else {
            return;
        };
        j.connections = j.connections.saturating_sub(1);
        if j.connections > 0 {
            return;
        }
        joins.remove(&topic);
        crate::lock(&self.topics).remove(&topic.0);
        if let Err(e) = self.gossip.leave(topic).await {
            tracing::debug!(error = %e, "leaving a topic: runtime stopped");
        }
    }

    /// The names of the joined topics, sorted.
    pub(crate) async fn topic_names(&self) -> Vec<String> {
        let joins = self.joins.topics.lock().await;
        let mut names: Vec<String> = joins.values().map(|j| j.name.clone()).collect();
        names.sort_unstable();
        names
    }
}

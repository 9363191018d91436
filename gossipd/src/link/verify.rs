//! Signature batches of the runtime: through the verifyd pool when an
//! instance is reachable, in-process otherwise (counted; operators see it
//! in diagnostics) rather than stall gossip. A failed pool batch is
//! rejected whole: no signature is ever taken as valid unchecked.

use std::sync::Arc;

use bytes::Bytes;
use libgossip::proto::Verdict;
use libgossip::runtime::{BoxFuture, VerifyItem};
use verifyd::client::{Item, Pool};

use super::State;
use super::stats::bump;

/// Verifies `batch` through `pool`, or in-process when no verifyd
/// instance is reachable (counted in `state`'s stats).
pub(super) fn verify(
    pool: Pool,
    state: Arc<State>,
    batch: Vec<VerifyItem>,
) -> BoxFuture<'static, Vec<Verdict>> {
    Box::pin(async move {
        let items = batch
            .iter()
            .map(|i| Item {
                key: i.key.clone(),
                msg: Bytes::copy_from_slice(&i.signed),
                sig: i.signature.clone(),
            })
            .collect();
        let n = batch.len();
        match pool.try_submit(items) {
            Ok(ticket) => match ticket.await {
                Ok(v) => {
                    bump(&state.stats.verify_pool);
                    v.into_iter()
                        .map(|v| match v {
                            verifyd::Verdict::Valid => Verdict::Valid,
                            _ => Verdict::Invalid,
                        })
                        .collect()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "verifyd batch failed; rejecting it");
                    vec![Verdict::Invalid; n]
                }
            },
            Err(_) => {
                // No verifyd reachable: check here rather than stall
                // gossip (counted; operators see it in diagnostics).
                bump(&state.stats.verify_local);
                libgossip::runtime::verify_in_process(batch).await
            }
        }
    })
}

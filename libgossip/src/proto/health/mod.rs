//! Peer-health building blocks (score, cooling, budgets, cleanup cadence).

pub mod budget;
pub mod cleanup;
pub mod cooling;
pub mod score;

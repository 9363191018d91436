//! Sans-IO protocol core: inputs carry `now`, outputs are data.

pub mod health;
pub mod store;
pub mod supervisor;

//! `libtransport`: QUIC over our own `quinn-proto` driver.
#![forbid(unsafe_code)]

pub mod io;

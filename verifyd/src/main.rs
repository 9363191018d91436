//! `verifyd` binary (being built).
fn main() {}

//! Loom models of `wire`'s shared-memory ring.
//!
//! The models live in `tests/ring.rs` and only exist when built with
//! `RUSTFLAGS="--cfg tern_loom"`: then `wire`'s [`wire::loom`] facade hands
//! the ring loom's atomics, locks and cells, so loom explores the thread
//! interleavings and weak-memory behaviours of the *production* protocol code
//! (`wire::ring::core` and `wire::ring::endpoint`) over heap memory
//! (`wire::ring::heap`). Run them with `scripts/loom.sh`, which also checks
//! that the models catch a deliberately weakened publish ordering
//! (`--cfg tern_loom_weak_publish`).
//!
//! In a normal build this crate is empty and its tests compile to nothing.
#![forbid(unsafe_code)]

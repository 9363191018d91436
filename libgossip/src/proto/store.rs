//! Bounded seen cache and payload store (being built).

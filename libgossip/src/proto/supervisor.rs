//! Dispatch supervisor decision function (being built).

//! In-process network with virtual time and impairments (being built).

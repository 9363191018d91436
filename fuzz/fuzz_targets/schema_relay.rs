//! The relay schema's verifier and accessors on arbitrary payload bytes:
//! whatever verifies must be readable field by field without a panic.
#![no_main]
#![allow(dead_code)]

use libfuzzer_sys::fuzz_target;

#[path = "../../wire/tests/common/walk.rs"]
mod walk;

fuzz_target!(|data: &[u8]| {
    std::hint::black_box(walk::relay(data));
});

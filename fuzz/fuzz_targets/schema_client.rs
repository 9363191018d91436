//! The client (application API) schema's verifier and accessors on
//! arbitrary payload bytes: whatever verifies must be readable field by
//! field, through the message enum too, without a panic.
#![no_main]
#![allow(dead_code)]

use libfuzzer_sys::fuzz_target;

#[path = "../../wire/tests/common/walk.rs"]
mod walk;

fuzz_target!(|data: &[u8]| {
    std::hint::black_box(walk::client(data));
    let _ = std::hint::black_box(wire::frame::decode_client(data).is_ok());
});

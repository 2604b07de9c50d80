//! Fuzz target: see `proto_core::testing::fuzz::decode_frames` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proto_core::testing::fuzz::decode_frames(data));

//! Fuzz target: see `proto_core::testing::fuzz::connection_chunks` for the input format and invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proto_core::testing::fuzz::connection_chunks(data));

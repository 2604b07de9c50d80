//! Criterion benchmarks of proto-core live in `benches/benches/`; this library is empty.

//! `bench/fleet-bench.py` against a booted fleet: an ignored test, run on
//! purpose with `cargo test --test it fleet::bench -- --ignored
//! --nocapture`. It prints numbers and asserts nothing about time.

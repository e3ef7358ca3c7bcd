//! The integration tests, one binary (as cargo's own `tests/testsuite`): a module per area, the
//! shared support (`common`: the CLI runner, the test doubles of the seams, emulator builders,
//! the Python tools) built and linked once instead of once per file.
//!
//! Run one area with `cargo test --test testsuite <area>::`, e.g. `cargo test --test testsuite e2e::`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

#[macro_use]
mod common;

mod apply;
mod ci_flow;
mod docs_as_written;
mod doctor;
mod e2e;
mod ecosystem;
mod effects_contract;
mod emulator;
mod escaping;
mod export;
mod hostile_manifests;
mod hostile_server;
mod installations;
mod kubernetes;
mod manifest;
mod manifest_trust;
mod messages;
mod oz_client;
mod pipeline;
mod plan;
mod plan_format;
mod reconcile;
mod redaction;
mod removals;
mod render;
mod review;
mod saved_plan_trust;
mod target;
mod test_script;
mod token_store;
mod token_store_conformance;
mod token_stores;

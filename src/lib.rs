//! ozform: a declarative reconciler for the Oz Forensics API.
//!
//! The flow is octoDNS's: `manifest` loads YAML into a `model::Desired`; `oz` reads the live
//! API into a `model::Observed`; `plan` computes a `plan::Plan` as a pure value (and is the
//! only reader and writer of the saved plan); `render` shows it; `apply` executes it in
//! dependency order through its `Effects` seam (the Oz client implements it) and keeps issued
//! tokens in a `token_store::TokenStore`. `cli` turns flags into settings and calls one
//! operation of `ops`, which connects the pieces over `ops::Target` (one installation as a
//! value) and hands back an outcome; `cli::report` maps outcomes to text and exit codes.
//! `emulator` is an in-process Oz API for tests, benchmarks and `ozform demo`. `output` is the
//! only writer to the terminal and scrubs what it writes; `secret` and `redact` keep passwords
//! and tokens out of every printout; `escape` makes every outside value safe for its medium.
//! `docs/architecture.md` draws the flow.
//!
//! Modules:
//! - `cli`: clap arguments → validated settings, one file per command; the terminal's view,
//!   the prompt, signals, and the exit code
//! - `ops`: the operations (`plan`, `apply`, `reconcile`, `export`, `demo`, `doctor`, `show`) over settings
//!   and `Target`s; they never print or exit
//! - `metrics`: Prometheus metrics of the operations (`ops::Measure`, `oz::RequestObserver`) and
//!   the small server of `reconcile --metrics-listen` (`/metrics`, `/healthz`, `/readyz`)
//! - `manifest`: files → `Desired`, with located diagnostics
//! - `model`: domain types shared by all layers (no I/O)
//! - `secret`: `Secret` (redacting) and `SecretRef` (`{env}` / `{file}`)
//! - `redact`: finds secrets in text in every form they come back in; the registry `output` scrubs against
//! - `oz`: the Oz client (dialects, sessions, paging, retries)
//! - `plan`: the planner and the saved plan format
//! - `render`: text and Markdown renderers
//! - `apply`: ordering and the concurrent executor
//! - `token_store`: where tokens are kept
//! - `emulator`: the built-in Oz API
//! - `escape`: one escaping function per medium (terminal, Markdown, JSON) for every value from outside
//! - `words`: counts in messages with real plurals (`1 company`, `2 companies`)
//! - `error`, `output`: the top-level error and the terminal

pub mod apply;
pub mod cli;
pub mod emulator;
pub mod error;
pub mod escape;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod output;
pub mod oz;
pub mod plan;
pub mod redact;
pub mod render;
pub mod secret;
pub mod token_store;
pub mod words;

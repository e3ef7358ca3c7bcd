//! The Oz API client: the only code that speaks HTTP to an Oz API.

mod error;

pub use error::OzError;

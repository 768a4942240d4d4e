//! Shared test support for the `api` suite (and, through `#[path]`, the `campaign` suite), one
//! file per concern; everything is re-exported here, so tests name it `crate::helpers::x`.
mod app;
mod child;
mod cli;
mod postgres;
mod requests;

pub use app::*;
pub use child::*;
pub use cli::*;
pub use postgres::*;
pub use requests::*;

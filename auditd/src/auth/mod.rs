//! Who may read the log: bearer tokens, and the signed links that stand in for one.

pub mod links;
mod tokens;

pub use tokens::{TokenStore, Tokens};

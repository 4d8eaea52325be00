//! Who may read the log or write to it: bearer tokens and their scopes, and the signed
//! links that stand in for a reading token.

pub mod links;
mod tokens;

pub use tokens::{Scope, Scopes, TokenStore, Tokens};

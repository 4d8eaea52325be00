//! The handlers, one module per route family. Each is a plain async function that takes
//! what it needs (the shared [`App`](crate::state::App), the request's parameters, the
//! caller) and returns an [`Answer`](crate::access::Answer); none knows the router.

pub mod bundle;
pub mod export;
pub mod export_link;
pub mod health;
pub mod ingest;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod overview;
pub mod proof;
pub mod stats;
pub mod tail;
pub mod viewer;

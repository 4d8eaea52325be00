//! Stage three, on the writer thread: queued records reach PostgreSQL exactly once.
//!
//! | piece | module |
//! |---|---|
//! | batching by size and time, flushes, shutdown, settling unknown outcomes | `writer` |
//! | one batch as binary `COPY` plus its ledger row; refused records isolated | `copy` |
//! | each batch's record leaves and Merkle root, committed in its ledger row | `hashing` |
//! | which failures are worth retrying, and the backoff between tries | `retry` |
//! | batches the database cannot take, kept on disk and replayed in order | `spool` |

mod copy;
mod hashing;
mod retry;
mod spool;
mod writer;

pub(crate) use copy::Sink;
pub(crate) use spool::Spool;
pub(crate) use writer::{Writer, WriterConfig};

pub use copy::COMMIT_CHANNEL;

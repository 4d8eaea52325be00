//! Stage two, between the threads: a finished record waits in a bounded queue.
//!
//! | piece | module |
//! |---|---|
//! | a record as queued: one buffer holding every text column and the metadata | `pending` |
//! | the queue: numbering (`seq`), never blocking, what a full queue does, flush and shutdown messages | `channel` |
//! | record buffers handed back by the writer for the emitting threads to reuse | `recycle` |

mod channel;
mod pending;
mod recycle;

pub(crate) use channel::{depth, Ack, Message, Queued, RecordSender, Sequence};
pub(crate) use pending::{EventTime, Pending, TextColumns};

pub use channel::OverflowPolicy;

//! Reading the log: from a request's parameters to parameterised SQL, and from rows back
//! to the JSON and CSV every route answers with.
//!
//! | piece | module |
//! |---|---|
//! | query parameters, taken one by one so an unknown one is an error | `params` |
//! | the filters every reading route shares | `filters` |
//! | SQL text with `$n` placeholders and the values apart | `sql` |
//! | pages, the commit-order tail, a record as JSON | `records` |
//! | opaque cursors: where a page or a tail left off | `cursor` |
//! | an export's parameters; a record as CSV | `export`, `csv` |
//! | the message sample that keeps substring search to the index's useful work | `text_search` |
//! | the writers' commit notices, which wake the tails | `notices` |
//! | one statement streamed in chunks: exports and retention archives | `stream` |

pub mod csv;
mod cursor;
mod export;
mod filters;
mod notices;
mod params;
pub mod records;
mod sql;
pub mod stream;
mod text_search;

pub use cursor::{PageCursor, TailCursor};
pub use export::{ExportRequest, Format};
pub use filters::Filters;
pub use notices::{commit_notices, follow, next_commit, CommitNotices};
pub use params::{limit, Params};
pub use sql::Sql;
pub use text_search::{renew_periodically, SharedSample};

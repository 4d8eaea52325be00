//! The router: the table of routes, and the pipeline every request goes through before and
//! after its handler. Handlers (`crate::handlers`) know nothing of either.

mod pipeline;
mod table;

pub use pipeline::handle;
pub use table::{Methods, Route, RouteId, ROUTES};

//! auditd: the audit log daemon, as a library so that tests can run its server in-process.
//!
//! | module | what it does |
//! |---|---|
//! | [`server`] | accepts connections, graceful shutdown |
//! | [`app`] | the route table; what every request goes through |
//! | [`logs`], [`export`], [`tail`], [`event_stats`], [`health`], [`openapi`] | the routes |
//! | [`viewer`] | the page for people, embedded |
//! | [`filters`], [`params`], [`cursor`] | turning query parameters into parameterised SQL |
//! | [`auth`], [`metrics`] | bearer tokens; Prometheus metrics |
//! | [`cli`], [`schema`], [`upkeep`], [`demo`], [`logging`] | the command line and its commands |

pub mod app;
pub mod auth;
pub mod cli;
pub mod cursor;
pub mod demo;
pub mod event_stats;
pub mod export;
pub mod export_link;
pub mod filters;
pub mod health;
pub mod http;
pub mod listen;
pub mod logging;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod query_string;
pub mod schema;
pub mod serve;
pub mod server;
pub mod tail;
pub mod text_search;
pub mod tls;
pub mod upkeep;
pub mod viewer;

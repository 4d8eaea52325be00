//! auditd: the audit log daemon, as a library so that tests can run its server in-process.
//!
//! | module | what it does |
//! |---|---|
//! | [`server`] | accepts connections, graceful shutdown |
//! | [`app`] | the route table; what every request goes through |
//! | [`tls`] | HTTPS: the certificate, reloadable |
//! | [`logs`], [`export`], [`tail`], [`event_stats`], [`health`], [`openapi`] | the routes |
//! | [`export_link`] | signed download links for exports |
//! | [`listen`] | the writers' commit notices, which wake the tails |
//! | [`viewer`] | the page for people, embedded |
//! | [`filters`], [`params`], [`cursor`], [`query_string`] | turning query parameters into parameterised SQL |
//! | [`text_search`] | the message sample that keeps substring search to the trigram index's useful work |
//! | [`auth`], [`metrics`] | bearer tokens (reloadable); Prometheus metrics |
//! | [`replaceable`] | what a reload replaces while requests read it |
//! | [`cli`], [`serve`], [`schema`], [`upkeep`], [`demo`], [`logging`] | the command line and its commands; serving until a signal |

#![warn(missing_docs)]

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
pub mod replaceable;
pub mod schema;
pub mod serve;
pub mod server;
pub mod tail;
pub mod text_search;
pub mod tls;
pub mod upkeep;
pub mod viewer;

//! cellfs fileserver: authoritative volumes (redb metadata plus data files
//! named by vnode), the VLDB, the callback promise registry, and the QUIC
//! server that answers `cellfs-protocol` RPCs.
//!
//! In-process use: [`config::init`] lays out a cell, [`serve`] (or
//! [`Server::open`] then [`Server::run`]) serves it.
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod callbacks;
pub mod cellops;
pub mod config;
pub mod dump;
pub mod error;
pub mod file_locks;
pub mod grace;
pub mod lock;
pub mod peers;
pub mod prometheus;
pub mod reserved;
pub mod rpc;
pub mod salvage;
pub mod schema;
pub mod secops;
pub mod security;
pub mod server;
pub mod store;
pub mod vldb;
pub mod volume;

pub use config::{InitOptions, InitReport, ServerConfig, init};
pub use error::FsError;
pub use server::{ServeOptions, Server, ServerError, serve, serve_with};

//! cellfs cache manager: a FUSE mount of a cell, with whole files in a local
//! disk cache kept coherent by the fileserver's callback breaks.
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod arrival;
pub mod cache;
pub mod caller;
pub mod control;
pub mod core;
pub mod error;
pub mod fstab;
pub mod fuse;
pub mod link;
pub mod links;
pub mod mount;
pub mod nodes;
pub mod passthrough;
pub mod persist;
pub mod prometheus;
pub mod range_locks;
pub mod readers;
pub mod rights;
pub mod settings;
pub mod unstored;

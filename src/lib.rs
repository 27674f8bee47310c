//! vws: the Virtual Workspaces service (Keahey, Foster et al., 2005) as a GT 4.0-compatible
//! SOAP/WSRF container. See ARCHITECTURE.md for the map of layers.

// WS-BaseFaults are rich on purpose (timestamp, originator, error code, descriptions, causes)
// and travel by value through every operation; boxing them would buy nothing measurable.
#![allow(clippy::result_large_err)]

pub mod app;
pub mod client;
pub mod config;
pub mod host;
pub mod security;
pub mod server;
pub mod services;
pub mod soap;
pub mod store;
pub mod transfer;
pub mod workspace;
pub mod wsrf;

//! Test fixtures, one file each: real sockets everywhere. Certificates are
//! made at test time, the upstream is a real HTTP server that records what it
//! receives, GeeTest is the project's simulator, and gatekeeper runs either
//! in-process or as the real binary.

mod certs;
mod client;
mod demo;
mod instance;
mod pebble;
mod process;
mod raw;
mod redis_server;
mod sim;
mod upstream;
mod wait;

pub use certs::*;
pub use client::*;
pub use demo::*;
pub use instance::*;
pub use pebble::*;
pub use process::*;
pub use raw::*;
pub use redis_server::*;
pub use sim::*;
pub use upstream::*;
pub use wait::*;

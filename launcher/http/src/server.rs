//! The HTTP server skeleton: every fleet server binds, accepts and reads bodies the same way.

pub mod body;
pub mod listen;
pub mod listener;
mod stall;

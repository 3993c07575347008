//! The `crawler` command: argument parsing, config loading and the commands it runs.
//! `main` is thin; everything here can be called from tests.
#![warn(missing_docs)]

pub mod cli;
pub mod commands;
pub mod config;
pub mod pprof;
pub mod progress;

//! One module per command.

pub mod crawl;
pub mod master;
pub mod version;

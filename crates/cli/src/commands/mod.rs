//! One module per command.

pub mod crawl;
pub mod version;

//! One module per command.

pub mod crawl;
pub mod ctl;
pub mod master;
pub mod version;

//! Test support shared by the integration tests.

pub mod proxy;
pub mod sandbox;
pub mod webdriver;

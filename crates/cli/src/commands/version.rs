//! `crawler version`.

/// The version line: crate version, git commit, build profile.
pub fn line() -> String {
    format!(
        "crawler {} (commit {}, {} build)",
        env!("CARGO_PKG_VERSION"),
        env!("CRAWLER_GIT_COMMIT"),
        env!("CRAWLER_PROFILE")
    )
}

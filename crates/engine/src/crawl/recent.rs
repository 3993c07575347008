//! What operators see of a crawl beside its counters: its last failures and items.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;
use url::Url;

use crate::extract::prefix_within;
use crate::item::{rfc3339, Item};

/// How many recent failures and items a crawl keeps.
const RECENT_ERRORS: usize = 20;
const RECENT_ITEMS: usize = 5;
/// Field values of a recent item are cut to this many bytes.
const RECENT_VALUE_BYTES: usize = 200;

/// A recent failure of a crawl.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecentError {
    /// The request's URL.
    pub url: String,
    /// The HTTP status, when the failure was one.
    pub status: Option<u16>,
    /// What went wrong.
    pub reason: String,
    /// When, RFC 3339.
    pub at: String,
}

/// A recent item of a crawl (values cut to 200 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecentItem {
    /// The page's URL.
    pub url: String,
    /// The item's table.
    pub table: String,
    /// Field names and values.
    pub fields: Vec<(String, Option<String>)>,
    /// When, RFC 3339.
    pub at: String,
}

/// The last failures and items of a crawl, newest last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Recent {
    /// Failed requests.
    pub errors: VecDeque<RecentError>,
    /// Stored items.
    pub items: VecDeque<RecentItem>,
}

/// A crawl's recent failures and items, shared by its jobs.
#[derive(Default)]
pub(super) struct RecentLog(Mutex<Recent>);

impl RecentLog {
    /// A copy of what is kept.
    pub(super) fn snapshot(&self) -> Recent {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keeps a failure among the recent ones.
    pub(super) fn error(&self, url: &Url, status: Option<u16>, reason: &dyn std::fmt::Display) {
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if recent.errors.len() == RECENT_ERRORS {
            recent.errors.pop_front();
        }
        let at = rfc3339(SystemTime::now());
        recent.errors.push_back(RecentError { url: url.to_string(), status, reason: reason.to_string(), at });
    }

    /// Keeps an item among the recent ones (values cut).
    pub(super) fn item(&self, item: &Item) {
        let cut = |v: &str| prefix_within(v, RECENT_VALUE_BYTES).to_owned();
        let fields = item.fields.iter().map(|(k, v)| (k.to_string(), v.as_deref().map(cut))).collect();
        let mut recent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if recent.items.len() == RECENT_ITEMS {
            recent.items.pop_front();
        }
        let at = item.crawled_at.clone();
        recent.items.push_back(RecentItem {
            url: item.url.clone(),
            table: item.table.to_string(),
            fields,
            at,
        });
    }
}

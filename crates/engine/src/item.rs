//! Items: what a crawl emits for each page handled by a rule with a table.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

/// One extracted record.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    /// Task name.
    pub task: Arc<str>,
    /// Table (the rule's `table`).
    pub table: Arc<str>,
    /// The page's URL.
    pub url: String,
    /// When the page was received, RFC 3339 UTC.
    pub crawled_at: String,
    /// Field values in the rule's order; `None` where nothing matched.
    pub fields: Vec<(Arc<str>, Option<String>)>,
}

impl Serialize for Item {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Data<'a>(&'a [(Arc<str>, Option<String>)]);
        impl Serialize for Data<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    m.serialize_entry(&**k, v)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("task", &*self.task)?;
        m.serialize_entry("table", &*self.table)?;
        m.serialize_entry("url", &self.url)?;
        m.serialize_entry("crawled_at", &self.crawled_at)?;
        m.serialize_entry("data", &Data(&self.fields))?;
        m.end()
    }
}

/// Formats a time as RFC 3339 in UTC with second precision: `2026-11-28T08:10:04Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_795_853_404)), "2026-11-28T08:10:04Z");
    }

    #[test]
    fn serializes_as_the_contract_line() {
        let item = Item {
            task: "books".into(),
            table: "book".into(),
            url: "http://h/1".into(),
            crawled_at: "2026-01-01T00:00:00Z".into(),
            fields: vec![("title".into(), Some("T".into())), ("price".into(), None)],
        };
        assert_eq!(
            serde_json::to_string(&item).unwrap(),
            r#"{"task":"books","table":"book","url":"http://h/1","crawled_at":"2026-01-01T00:00:00Z","data":{"title":"T","price":null}}"#
        );
    }
}

//! Declarative crawl tasks: the serde form users write (TOML in the config file, JSON in the
//! cluster API) and its validated, compiled form the engine runs.
//!
//! Validation happens once, here; every error names the key (`task[books].rule[book].fields.title`)
//! and the problem. Nothing in this module does I/O.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lol_html::Selector;
use regex::Regex;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

use crate::scope::normalize;
use crate::units::HumanDuration;

/// The crawl state's tables, and its SQLite indexes (whose names SQLite shares with tables),
/// which no rule's items may go into; nor may they go into a `sqlite_*` table, which SQLite
/// keeps for itself. Compared in lower case.
const STATE_TABLES: [&str; 6] = [
    "crawler_runs",
    "crawler_frontier",
    "crawler_parts",
    "crawler_inbox",
    "crawler_runs_by_task",
    "crawler_frontier_spilled",
];

/// The most events a rate limit may count in its window.
const MAX_LIMIT_EVENTS: u32 = 1_000_000;

/// An `allow_hosts` entry as URLs spell their host: an international name in its ASCII form
/// (`bücher.example` is `xn--bcher-kva.example`), IPv6 in brackets, lower case; a port is
/// dropped (hosts are allowed on every port). `None` for what is not a host name: a name is
/// letters, digits, `-` and `_` in dot-separated labels (the URL parser would take `*.example`
/// or `.example` as a name no link ever has).
fn allowed_host(entry: &str) -> Option<String> {
    let entry = entry.trim();
    let entry = match entry.matches(':').count() > 1 && !entry.starts_with('[') {
        true => format!("[{entry}]"),
        false => entry.to_owned(),
    };
    let url = Url::parse(&format!("http://{entry}/")).ok()?;
    let bare =
        url.path() == "/" && url.query().is_none() && url.username().is_empty() && url.password().is_none();
    let name_like = |h: &str| {
        h.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    };
    match url.host()? {
        // A fully qualified `example.com.` allows `example.com`, as links spell it.
        url::Host::Domain(h) => {
            let h = h.strip_suffix('.').unwrap_or(h);
            (bare && name_like(h)).then(|| h.to_owned())
        }
        _ if !bare => None,
        _ => url.host_str().map(str::to_owned),
    }
}

/// A crawl task as written by a user.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique task name; also the `task` column of every item.
    pub name: String,
    /// Start URLs, fetched at depth 0 under the first rule.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// Hosts links may lead to; empty means the seeds' hosts.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Deepest link distance from a seed that is still fetched.
    #[serde(default = "default_max_depth")]
    pub max_depth: u32,
    /// Stop after this many requests; 0 means no limit.
    #[serde(default)]
    pub max_pages: u64,
    /// Rate limits; every one must allow a request before it is sent.
    #[serde(default)]
    pub limits: Vec<LimitSpec>,
    /// A random wait in `[0, wait)` before each request.
    #[serde(default)]
    pub wait: HumanDuration,
    /// A `Cookie` header sent with every request of this task.
    #[serde(default)]
    pub cookie: String,
    /// Whether an already visited URL may be fetched again.
    #[serde(default)]
    pub reload: bool,
    /// The rules; the first handles the seeds.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSpec>,
    /// Sitemaps (or sitemap indexes, gzipped or not) whose URLs are queued at depth 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sitemaps: Vec<String>,
    /// Also read the sitemaps named by the `Sitemap:` lines of the seeds' robots.txt.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sitemaps_from_robots: bool,
    /// The rule that handles sitemap URLs; the first rule when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sitemap_rule: Option<String>,
    /// In a cluster: host partitions the task is split into across workers (1: the whole task
    /// on one worker). Absent: the cluster's default (64 on a shared MySQL store, else 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
}

/// The most partitions a task may be split into.
pub const MAX_PARTITIONS: u32 = 4096;

fn default_max_depth() -> u32 {
    5
}

/// One rate limit: at most `events` requests per `per`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// Requests allowed per window (also the burst size).
    pub events: u32,
    /// The window.
    pub per: HumanDuration,
}

/// How the pages reached under one rule are handled.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Rule name, referred to by `follow` entries.
    pub name: String,
    /// Higher runs first among requests of the same depth.
    #[serde(default)]
    pub priority: i32,
    /// Links to queue from pages of this rule.
    #[serde(default)]
    pub follow: Vec<FollowSpec>,
    /// When set, each page of this rule emits one item into this table.
    #[serde(default)]
    pub table: Option<String>,
    /// The item's fields.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
}

/// Which links to follow from a page.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FollowSpec {
    /// CSS selector of the link elements.
    pub select: String,
    /// Rule that handles the linked pages.
    pub rule: String,
    /// Attribute holding the URL; `href` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attr: Option<String>,
    /// Only URLs matching this regex are followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// A field: a bare CSS selector string, or a table with `select`, `attr` and `regex`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FieldSpec {
    /// CSS selector; the first match is used.
    pub select: Option<String>,
    /// Take this attribute of the match instead of its text.
    pub attr: Option<String>,
    /// First capture group of this regex over the match's text (or over the page's HTML
    /// when there is no `select`).
    pub regex: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldTable {
    select: Option<String>,
    attr: Option<String>,
    regex: Option<String>,
}

impl<'de> Deserialize<'de> for FieldSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = FieldSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a CSS selector string or a table with select, attr or regex")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FieldSpec, E> {
                Ok(FieldSpec { select: Some(v.to_owned()), ..FieldSpec::default() })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<FieldSpec, A::Error> {
                let t = FieldTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(FieldSpec { select: t.select, attr: t.attr, regex: t.regex })
            }
        }
        d.deserialize_any(FieldVisitor)
    }
}

impl Serialize for FieldSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if let (Some(sel), None, None) = (&self.select, &self.attr, &self.regex) {
            return s.serialize_str(sel);
        }
        let mut m = s.serialize_map(None)?;
        if let Some(v) = &self.select {
            m.serialize_entry("select", v)?;
        }
        if let Some(v) = &self.attr {
            m.serialize_entry("attr", v)?;
        }
        if let Some(v) = &self.regex {
            m.serialize_entry("regex", v)?;
        }
        m.end()
    }
}

/// A task that failed validation: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct SpecError {
    /// Dotted path of the offending key, e.g. `task[books].rule[book].fields.title`.
    pub key: String,
    /// What is wrong, in a few words.
    pub problem: String,
}

/// A validated task, ready to run. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Task(pub(crate) Arc<TaskInner>);

#[derive(Debug)]
pub(crate) struct TaskInner {
    pub spec: TaskSpec,
    pub name: Arc<str>,
    pub seeds: Vec<Url>,
    pub sitemaps: Vec<Url>,
    pub sitemap_rule: usize,
    pub allow_hosts: HashSet<String>,
    pub limits: Vec<(u32, Duration)>,
    pub rules: Vec<Rule>,
    /// The id each rule is stored under in a run's frontier (see [`Task::rule_of`]).
    pub rule_ids: Vec<u32>,
}

/// Stored rule ids are in `RULE_IDS..2 * RULE_IDS` (a MySQL `INT` holds them); below are the
/// rule indices runs stored before ids were.
const RULE_IDS: u32 = 1 << 30;

#[derive(Debug)]
pub(crate) struct Rule {
    pub priority: i32,
    pub table: Option<Arc<str>>,
    pub follows: Vec<Follow>,
    pub fields: Vec<Field>,
}

#[derive(Debug)]
pub(crate) struct Follow {
    pub selector: Selector,
    pub attr: String,
    pub pattern: Option<Regex>,
    pub rule: usize,
}

#[derive(Debug)]
pub(crate) struct Field {
    pub name: Arc<str>,
    pub selector: Option<Selector>,
    pub attr: Option<String>,
    pub regex: Option<Regex>,
}

impl Task {
    /// Validates a spec and compiles its selectors and patterns.
    pub fn compile(spec: TaskSpec) -> Result<Task, SpecError> {
        let base = format!("task[{}]", spec.name);
        let err = |key: String, problem: String| SpecError { key, problem };
        if !is_identifier_like(&spec.name) {
            return Err(err(
                "task.name".into(),
                format!("{:?} must be 1-64 letters, digits, '_' or '-'", spec.name),
            ));
        }
        if spec.seeds.is_empty() && spec.sitemaps.is_empty() {
            return Err(err(
                format!("{base}.seeds"),
                "at least one seed URL (or a sitemap) is needed".into(),
            ));
        }
        if spec.seeds.is_empty() && spec.sitemaps_from_robots {
            return Err(err(
                format!("{base}.sitemaps_from_robots"),
                "needs seeds, whose robots.txt is read".into(),
            ));
        }
        let http_urls = |list: &[String], key: &str| -> Result<Vec<Url>, SpecError> {
            let mut urls = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                let url = Url::parse(s)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                    .ok_or_else(|| {
                        err(format!("{base}.{key}[{i}]"), format!("{s:?} is not an http(s) URL"))
                    })?;
                let url = normalize(url);
                if url.as_str().len() > crate::scope::MAX_URL_LEN {
                    return Err(err(
                        format!("{base}.{key}[{i}]"),
                        format!("longer than {} bytes", crate::scope::MAX_URL_LEN),
                    ));
                }
                urls.push(url);
            }
            Ok(urls)
        };
        let seeds = http_urls(&spec.seeds, "seeds")?;
        // Sent as a header: a value one cannot be (a newline pasted with it) was dropped, and
        // the crawl went on logged out without a word.
        if !spec.cookie.is_empty() && http::HeaderValue::from_str(&spec.cookie).is_err() {
            return Err(err(
                format!("{base}.cookie"),
                "is not a valid header value (control characters such as a newline?)".into(),
            ));
        }
        let sitemaps = http_urls(&spec.sitemaps, "sitemaps")?;
        let mut allow_hosts = HashSet::new();
        for (i, h) in spec.allow_hosts.iter().enumerate() {
            let host = allowed_host(h).ok_or_else(|| {
                let hint = match h.contains('*') {
                    true => " (wildcards are not supported: list each host)",
                    false => "",
                };
                err(format!("{base}.allow_hosts[{i}]"), format!("{h:?} is not a host name{hint}"))
            })?;
            allow_hosts.insert(host);
        }
        if allow_hosts.is_empty() {
            allow_hosts =
                seeds.iter().chain(&sitemaps).filter_map(|u| u.host_str().map(str::to_owned)).collect();
        }
        if let Some(p) = spec.partitions.filter(|p| !(1..=MAX_PARTITIONS).contains(p)) {
            return Err(err(format!("{base}.partitions"), format!("{p} is not in 1..={MAX_PARTITIONS}")));
        }
        let mut limits = Vec::new();
        for (i, l) in spec.limits.iter().enumerate() {
            if l.events == 0 || l.per.0.is_zero() {
                return Err(err(
                    format!("{base}.limits[{i}]"),
                    "events and per must both be above zero".into(),
                ));
            }
            // The limiter keeps a time per event of the window: a huge count ("no limit")
            // asked for gigabytes at the start, and the process aborted.
            if l.events > MAX_LIMIT_EVENTS {
                return Err(err(
                    format!("{base}.limits[{i}].events"),
                    format!("{} is above {MAX_LIMIT_EVENTS} (leave the limit out for none)", l.events),
                ));
            }
            limits.push((l.events, l.per.0));
        }
        if spec.rules.is_empty() {
            return Err(err(format!("{base}.rule"), "at least one rule is needed".into()));
        }
        let mut names = Vec::with_capacity(spec.rules.len());
        for (i, r) in spec.rules.iter().enumerate() {
            if r.name.is_empty() {
                return Err(err(format!("{base}.rule[{i}].name"), "must not be empty".into()));
            }
            if names.contains(&r.name.as_str()) {
                return Err(err(format!("{base}.rule[{}].name", r.name), "duplicate rule name".into()));
            }
            names.push(r.name.as_str());
        }
        let rule_ids: Vec<u32> =
            names.iter().map(|n| crate::scope::stable_hash(n) as u32 % RULE_IDS + RULE_IDS).collect();
        for (i, id) in rule_ids.iter().enumerate() {
            if let Some(j) = rule_ids[..i].iter().position(|other| other == id) {
                return Err(err(
                    format!("{base}.rule[{}].name", names[i]),
                    format!("is stored under the same id as rule {:?}: rename one of them", names[j]),
                ));
            }
        }
        let sitemap_rule = match &spec.sitemap_rule {
            None => 0,
            Some(name) => names
                .iter()
                .position(|n| n == name)
                .ok_or_else(|| err(format!("{base}.sitemap_rule"), format!("no rule named {name:?}")))?,
        };
        let mut rules = Vec::with_capacity(spec.rules.len());
        for r in &spec.rules {
            let key = format!("{base}.rule[{}]", r.name);
            let mut follows = Vec::new();
            for (i, f) in r.follow.iter().enumerate() {
                let fkey = format!("{key}.follow[{i}]");
                let rule = names
                    .iter()
                    .position(|n| *n == f.rule)
                    .ok_or_else(|| err(format!("{fkey}.rule"), format!("no rule named {:?}", f.rule)))?;
                follows.push(Follow {
                    selector: parse_selector(&f.select, &format!("{fkey}.select"))?,
                    attr: f.attr.clone().unwrap_or_else(|| "href".into()),
                    pattern: f
                        .pattern
                        .as_deref()
                        .map(|p| parse_regex(p, &format!("{fkey}.pattern"), false))
                        .transpose()?,
                    rule,
                });
            }
            let table = match &r.table {
                Some(t) if !is_sql_identifier(t) => {
                    return Err(err(
                        format!("{key}.table"),
                        format!("{t:?} must be letters, digits and '_', not starting with a digit"),
                    ))
                }
                Some(t) if STATE_TABLES.contains(&t.to_ascii_lowercase().as_str()) => {
                    return Err(err(format!("{key}.table"), format!("{t:?} is a name of the crawl state's")))
                }
                Some(t) if t.to_ascii_lowercase().starts_with("sqlite_") => {
                    return Err(err(
                        format!("{key}.table"),
                        format!("{t:?}: names sqlite_* are SQLite's own"),
                    ))
                }
                Some(t) => Some(Arc::<str>::from(t.as_str())),
                None => None,
            };
            if table.is_none() && !r.fields.is_empty() {
                return Err(err(format!("{key}.fields"), "fields need a table to go into".into()));
            }
            let mut fields = Vec::new();
            // Column names are case-insensitive in SQLite and MySQL alike.
            let mut columns = HashSet::new();
            for (name, f) in &r.fields {
                let fkey = format!("{key}.fields.{name}");
                let column = name.to_ascii_lowercase();
                if !is_sql_identifier(name) || ["task", "url", "crawled_at"].contains(&column.as_str()) {
                    return Err(err(
                        fkey,
                        "field names are letters, digits and '_' and not task, url or crawled_at".into(),
                    ));
                }
                if !columns.insert(column) {
                    return Err(err(fkey, "another field has this name but for case (one column)".into()));
                }
                if f.select.is_none() && f.regex.is_none() {
                    return Err(err(fkey, "needs select or regex".into()));
                }
                if f.select.is_none() && f.attr.is_some() {
                    return Err(err(format!("{fkey}.attr"), "attr needs select".into()));
                }
                fields.push(Field {
                    name: name.as_str().into(),
                    selector: f
                        .select
                        .as_deref()
                        .map(|s| parse_selector(s, &format!("{fkey}.select")))
                        .transpose()?,
                    attr: f.attr.clone(),
                    regex: f
                        .regex
                        .as_deref()
                        .map(|p| parse_regex(p, &format!("{fkey}.regex"), true))
                        .transpose()?,
                });
            }
            rules.push(Rule { priority: r.priority, table, follows, fields });
        }
        Ok(Task(Arc::new(TaskInner {
            name: spec.name.as_str().into(),
            seeds,
            sitemaps,
            sitemap_rule,
            allow_hosts,
            limits,
            rules,
            rule_ids,
            spec,
        })))
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The spec this task was compiled from.
    pub fn spec(&self) -> &TaskSpec {
        &self.0.spec
    }

    /// The rule a stored request was queued under: by id, a hash of the rule's name (so that a
    /// run resumed after the task's rules were reordered, added to or removed from gives each
    /// request the rule it was queued under; the index, stored before, gave it whichever rule
    /// had taken that place), or by index in a run stored before ids were (`None`: the task
    /// has no such rule now).
    pub(crate) fn rule_of(&self, stored: u32) -> Option<usize> {
        match stored >= RULE_IDS {
            true => self.0.rule_ids.iter().position(|&id| id == stored),
            false => Some(stored as usize).filter(|&i| i < self.0.rules.len()),
        }
    }

    /// Requests per host a stored run of this task keeps in memory, given the configured
    /// `queue_window`: all of them with `reload` (its frontier never spills, so a resumed run
    /// loads every waiting row).
    pub fn queue_window(&self, configured: usize) -> usize {
        if self.0.spec.reload {
            usize::MAX
        } else {
            configured
        }
    }

    /// The partition of the seeds' host (the first seed's, else the first sitemap's) when the
    /// task is split into `count` partitions.
    pub fn home_partition(&self, count: u32) -> u32 {
        let first = self.0.seeds.first().or(self.0.sitemaps.first());
        first.map_or(0, |u| crate::frontier::partition_of(crate::frontier::host_name(u), count))
    }
}

fn parse_selector(s: &str, key: &str) -> Result<Selector, SpecError> {
    s.parse::<Selector>()
        .map_err(|e| SpecError { key: key.to_owned(), problem: format!("bad CSS selector {s:?}: {e}") })
}

fn parse_regex(p: &str, key: &str, needs_group: bool) -> Result<Regex, SpecError> {
    let re = Regex::new(p).map_err(|e| SpecError {
        key: key.to_owned(),
        problem: format!("bad regex: {}", e.to_string().lines().last().unwrap_or("invalid")),
    })?;
    if needs_group && re.captures_len() < 2 {
        return Err(SpecError { key: key.to_owned(), problem: format!("regex {p:?} needs a capture group") });
    }
    Ok(re)
}

fn is_identifier_like(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_sql_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.as_bytes()[0].is_ascii_digit()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_rules: &str) -> TaskSpec {
        let json = format!(r#"{{"name":"t","seeds":["http://127.0.0.1:1/"],"rule":{toml_rules}}}"#);
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn a_good_task_compiles() {
        let t = Task::compile(spec(
            r#"[{"name":"index","follow":[{"select":"a.book","rule":"book"}]},
                {"name":"book","table":"book","fields":{"title":"h1","link":{"select":"a","attr":"href"},"id":{"regex":"id=(\\d+)"}}}]"#,
        ))
        .unwrap();
        assert_eq!(t.name(), "t");
        assert_eq!(t.0.rules[0].follows[0].rule, 1);
        assert_eq!(t.0.allow_hosts, HashSet::from(["127.0.0.1".to_owned()]));
        assert_eq!(t.0.rules[1].fields.len(), 3);
    }

    #[test]
    fn stored_rules_are_found_by_name_or_by_the_index_stored_before() {
        let t = Task::compile(spec(r#"[{"name":"index"},{"name":"book"}]"#)).unwrap();
        let swapped = Task::compile(spec(r#"[{"name":"new"},{"name":"book"},{"name":"index"}]"#)).unwrap();
        // Ids follow the name wherever the rule stands, and are fixed: they are stored.
        assert_eq!(t.0.rule_ids, [1_612_778_062, 1_513_175_971]);
        assert_eq!(swapped.rule_of(t.0.rule_ids[0]), Some(2));
        assert_eq!(swapped.rule_of(t.0.rule_ids[1]), Some(1));
        assert!(t.0.rule_ids.iter().all(|&id| (RULE_IDS..2 * RULE_IDS).contains(&id)));
        assert_eq!(t.rule_of(swapped.0.rule_ids[0]), None, "a rule the task no longer has");
        // A run stored before ids: the index.
        assert_eq!((t.rule_of(1), t.rule_of(2)), (Some(1), None));
    }

    #[test]
    fn errors_name_the_key() {
        let e =
            Task::compile(spec(r#"[{"name":"index","follow":[{"select":"a","rule":"nope"}]}]"#)).unwrap_err();
        assert_eq!(e.key, "task[t].rule[index].follow[0].rule");
        let e = Task::compile(spec(r#"[{"name":"i","table":"b","fields":{"x":"h1[[["}}]"#)).unwrap_err();
        assert_eq!(e.key, "task[t].rule[i].fields.x.select");
        let e =
            Task::compile(spec(r#"[{"name":"i","table":"b","fields":{"x":{"regex":"\\d+"}}}]"#)).unwrap_err();
        assert!(e.problem.contains("capture group"), "{e}");
        let e = Task::compile(spec(r#"[{"name":"i","table":"1b"}]"#)).unwrap_err();
        assert_eq!(e.key, "task[t].rule[i].table");
        let e = Task::compile(spec(r#"[{"name":"i","fields":{"x":"h1"}}]"#)).unwrap_err();
        assert_eq!(e.key, "task[t].rule[i].fields");
        let e = Task::compile(spec("[]")).unwrap_err();
        assert_eq!(e.key, "task[t].rule");
    }

    #[test]
    fn sitemaps_are_checked_and_may_replace_seeds() {
        let rules = r#"[{"name":"i"},{"name":"page"}]"#;
        let with = |extra: &str| -> Result<Task, SpecError> {
            let json = format!(r#"{{"name":"t",{extra},"rule":{rules}}}"#);
            Task::compile(serde_json::from_str(&json).unwrap())
        };
        let t = with(r#""sitemaps":["http://127.0.0.2:9/sitemap.xml"],"sitemap_rule":"page""#).unwrap();
        assert_eq!(t.0.sitemap_rule, 1);
        assert!(t.0.seeds.is_empty());
        assert_eq!(t.0.allow_hosts, HashSet::from(["127.0.0.2".to_owned()]));
        assert_eq!(with(r#""seeds":["http://h/"]"#).unwrap().0.sitemap_rule, 0);
        let e = with(r#""seeds":["http://h/"],"sitemap_rule":"nope""#).unwrap_err();
        assert_eq!(e.key, "task[t].sitemap_rule");
        let e = with(r#""sitemaps":["ftp://h/s.xml"]"#).unwrap_err();
        assert_eq!(e.key, "task[t].sitemaps[0]");
        let e = with(r#""sitemaps_from_robots":true"#).unwrap_err();
        assert_eq!(e.key, "task[t].seeds");
        let e = with(r#""sitemaps":["http://h/s.xml"],"sitemaps_from_robots":true"#).unwrap_err();
        assert_eq!(e.key, "task[t].sitemaps_from_robots");
    }

    #[test]
    fn table_and_field_names_that_would_clash_in_the_database_are_refused() {
        let rule = |r: &str| {
            let json = format!(r#"{{"name":"t","seeds":["http://h/"],"rule":[{r}]}}"#);
            Task::compile(serde_json::from_str(&json).unwrap()).unwrap_err().key
        };
        assert_eq!(
            rule(r#"{"name":"i","table":"Crawler_Frontier","fields":{"a":"h1"}}"#),
            "task[t].rule[i].table"
        );
        assert_eq!(
            rule(r#"{"name":"i","table":"b","fields":{"Title":"h1","title":"h2"}}"#),
            "task[t].rule[i].fields.title"
        );
        assert_eq!(rule(r#"{"name":"i","table":"b","fields":{"URL":"h1"}}"#), "task[t].rule[i].fields.URL");
        // SQLite's names of indexes and tables are one namespace: the state's indexes too, and
        // SQLite's own prefix (every write failed on them).
        for t in ["crawler_frontier_spilled", "CRAWLER_RUNS_BY_TASK", "sqlite_stat1", "SQLite_x"] {
            assert_eq!(
                rule(&format!(r#"{{"name":"i","table":"{t}","fields":{{"a":"h1"}}}}"#)),
                "task[t].rule[i].table"
            );
        }
        let other = r#"{"name":"t","seeds":["http://h/"],"rule":[{"name":"i","table":"crawler_items","fields":{"a":"h1"}}]}"#;
        assert!(Task::compile(serde_json::from_str(other).unwrap()).is_ok(), "only the state's own tables");
    }

    #[test]
    fn a_cookie_that_cannot_be_a_header_and_a_huge_limit_are_refused() {
        let with = |extra: &str| {
            let json = format!(r#"{{"name":"t","seeds":["http://h/"],{extra},"rule":[{{"name":"i"}}]}}"#);
            Task::compile(serde_json::from_str(&json).unwrap())
        };
        assert_eq!(with(r#""cookie":"session=abc\n""#).unwrap_err().key, "task[t].cookie");
        assert!(with(r#""cookie":"session=abc; theme=dark""#).is_ok());
        let e = with(r#""limits":[{"events":4294967295,"per":"1s"}]"#).unwrap_err();
        assert_eq!(e.key, "task[t].limits[0].events", "{}", e.problem);
        assert!(with(r#""limits":[{"events":1000000,"per":"1h"}]"#).is_ok());
    }

    #[test]
    fn a_seed_over_the_url_length_limit_is_refused() {
        let seed = format!("http://h/?q={}", "a".repeat(2100));
        let json = format!(r#"{{"name":"t","seeds":["http://h/ok","{seed}"],"rule":[{{"name":"i"}}]}}"#);
        let e = Task::compile(serde_json::from_str(&json).unwrap()).unwrap_err();
        assert_eq!(e.key, "task[t].seeds[1]", "{}", e.problem);
    }

    #[test]
    fn allow_hosts_are_spelled_as_urls_spell_hosts() {
        let task = |hosts: &str| {
            let json = format!(
                r#"{{"name":"t","seeds":["http://a/"],"allow_hosts":{hosts},"rule":[{{"name":"i"}}]}}"#
            );
            Task::compile(serde_json::from_str(&json).unwrap())
        };
        let t = task(r#"["Bücher.Example", "127.0.0.1:18080", "::1", "[::2]", " plain.example "]"#).unwrap();
        let allowed = |url: &str| crate::scope::host_allowed(&Url::parse(url).unwrap(), &t.0.allow_hosts);
        assert!(allowed("http://bücher.example/x") && allowed("http://xn--bcher-kva.example/"));
        assert!(allowed("http://127.0.0.1:18080/") && allowed("http://127.0.0.1:9/"), "every port");
        assert!(allowed("http://[::1]/") && allowed("http://[::2]:8/") && allowed("https://plain.example/"));
        assert!(!allowed("http://www.plain.example/") && !allowed("http://127.0.0.2:18080/"));
        for (bad, i) in [
            (r#"["ok.example", ""]"#, 1),
            (r#"["a/b"]"#, 0),
            (r#"["u@h"]"#, 0),
            (r#"["h?q"]"#, 0),
            // The URL parser takes these for names, which no link's host ever is.
            (r#"["*.example.com"]"#, 0),
            (r#"["ok.example", ".example.com"]"#, 1),
            (r#"["a..example"]"#, 0),
            (r#"["a$b.example"]"#, 0),
        ] {
            let e = task(bad).unwrap_err();
            assert_eq!(e.key, format!("task[t].allow_hosts[{i}]"), "{bad}: {}", e.problem);
        }
        assert!(task(r#"["*.example.com"]"#).unwrap_err().problem.contains("wildcards are not supported"));
        assert_eq!(task(r#"["a..example."]"#).unwrap_err().key, "task[t].allow_hosts[0]");
        let t = task(r#"["trailing.example.", "under_score.example"]"#).unwrap();
        let allowed = |url: &str| crate::scope::host_allowed(&Url::parse(url).unwrap(), &t.0.allow_hosts);
        assert!(allowed("http://trailing.example/") && allowed("http://under_score.example/"));
    }

    #[test]
    fn unknown_field_keys_are_rejected() {
        let r: Result<TaskSpec, _> = serde_json::from_str(
            r#"{"name":"t","seeds":[],"rule":[{"name":"i","table":"b","fields":{"x":{"selct":"h1"}}}]}"#,
        );
        assert!(r.unwrap_err().to_string().contains("selct"));
    }

    #[test]
    fn a_spec_with_every_key_round_trips_through_json() {
        // A master stores the spec of a task added by name in the resource record, and every
        // worker runs what it reads back.
        let s: TaskSpec = serde_json::from_str(
            r#"{"name":"t","seeds":["http://h/"],"allow_hosts":["h","g"],"max_depth":3,"max_pages":9,
                "limits":[{"events":5,"per":"2s"}],"wait":"150ms","cookie":"a=b","reload":true,
                "sitemaps":["http://h/s.xml"],"sitemap_rule":"i","partitions":8,
                "rule":[{"name":"i","priority":2,"follow":[{"select":"a","rule":"i","attr":"data-x","pattern":"^/p"}],
                         "table":"b","fields":{"a":"h1","b":{"select":"a","attr":"href"},"c":{"regex":"id=(\\d+)"}}}]}"#,
        )
        .unwrap();
        let back: TaskSpec = serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(s, back);
    }

    #[test]
    fn field_spec_round_trips_through_json() {
        let s = spec(r#"[{"name":"i","table":"b","fields":{"a":"h1","b":{"select":"a","attr":"href"}}}]"#);
        let back: TaskSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(s, back);
    }
}

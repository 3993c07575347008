//! robots.txt: parsing and the allow/deny decision for one user agent.
//!
//! Follows RFC 9309: the groups whose user-agent is our product token (exactly, compared
//! case-insensitively; else the `*` groups), merged; the longest matching `Allow`/`Disallow`
//! path wins, `Allow` wins ties; `*` and `$` wildcards; paths compared percent-normalised
//! (non-ASCII and reserved octets encoded with upper-case hex, encoded unreserved ones decoded);
//! `/robots.txt` itself always allowed; only the first [`MAX_ROBOTS_BYTES`] parsed.
//! `Crawl-delay` (of our group, else of `*`) and the `Sitemap:` lines are kept.
//!
//! Fetching and caching per host is the crawl's job, not this module's; it decides that a
//! missing robots.txt (4xx) allows all and an unavailable one (5xx, unreachable) disallows all.
//!
//! Why not a crate: `texting_robots` (the best kept one) matches agents exactly but compares
//! `%7E` and `~` as different paths, does not cap the input and pulls in `nom` 7 and `bstr` 0.2;
//! the rules above fit in this file.

use std::time::Duration;

use crate::scope::{hex, push_escaped};

/// Bytes of a robots.txt that are parsed; the rest is ignored (RFC 9309 asks for at least
/// 500 KiB).
pub const MAX_ROBOTS_BYTES: usize = 500 * 1024;

/// The rules of one robots.txt that apply to our user agent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Robots {
    /// `(allow, percent-normalised pattern)`.
    rules: Vec<(bool, String)>,
    crawl_delay: Option<Duration>,
    sitemaps: Vec<String>,
    /// Why everything is disallowed, when the robots.txt could not be read.
    unavailable: Option<String>,
}

/// One group being read: its agents and what applies to them.
#[derive(Default)]
struct Group {
    agents: Vec<String>,
    rules: Vec<(bool, String)>,
    delay: Option<Duration>,
    /// Whether an `Allow`/`Disallow` line was seen (a following `User-agent` starts a new group).
    has_rules: bool,
}

/// The merged groups for one kind of agent (ours, or `*`).
#[derive(Default)]
struct Merged {
    found: bool,
    rules: Vec<(bool, String)>,
    delay: Option<Duration>,
}

impl Merged {
    fn take(&mut self, g: &Group) {
        self.found = true;
        self.rules.extend(g.rules.iter().cloned());
        self.delay = self.delay.or(g.delay);
    }
}

impl Robots {
    /// A robots.txt that allows everything (missing file, 4xx).
    pub fn allow_all() -> Robots {
        Robots::default()
    }

    /// Everything disallowed because the robots.txt could not be read (5xx, unreachable), as
    /// RFC 9309 asks; `why` says what went wrong.
    pub fn unavailable(why: String) -> Robots {
        Robots { rules: vec![(false, "/".into())], unavailable: Some(why), ..Robots::default() }
    }

    /// Why the robots.txt could not be read, if it could not.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// The `Crawl-delay` of our group (or of `*`), if one was given.
    pub fn crawl_delay(&self) -> Option<Duration> {
        self.crawl_delay
    }

    /// The `Sitemap:` URLs, as written (they apply to every agent).
    pub fn sitemaps(&self) -> &[String] {
        &self.sitemaps
    }

    /// Parses a robots.txt for the agent whose product token is taken from `user_agent`
    /// (the part before the first `/` or space, compared case-insensitively). Invalid UTF-8 is
    /// replaced; bytes past `MAX_ROBOTS_BYTES` are ignored.
    pub fn parse(body: &[u8], user_agent: &str) -> Robots {
        // Past the cap, the cut line is dropped too (`Allow: /private-ok` cut to `Allow: /pr`
        // would allow more than written).
        let body = match body.len() > MAX_ROBOTS_BYTES {
            true => {
                let cut = &body[..MAX_ROBOTS_BYTES];
                &cut[..cut.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1)]
            }
            false => body,
        };
        // A leading byte order mark (files saved by some editors) is not part of the first key.
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let text = String::from_utf8_lossy(body);
        let token = user_agent.split(['/', ' ']).next().unwrap_or("").to_ascii_lowercase();
        let mut ours = Merged::default();
        let mut star = Merged::default();
        let mut sitemaps = Vec::new();
        let mut group = Group::default();
        let mut finish = |g: &mut Group| {
            let g = std::mem::take(g);
            if !token.is_empty() && g.agents.contains(&token) {
                ours.take(&g);
            }
            if g.agents.iter().any(|a| a == "*") {
                star.take(&g);
            }
        };
        for line in text.split(['\n', '\r', '\0']) {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some((key, value)) = split_line(line) else { continue };
            match key.as_str() {
                "user-agent" => {
                    if group.has_rules {
                        finish(&mut group);
                    }
                    // A product token is letters, `_` and `-`: `Foo Bar` and `crawler/0.1` name
                    // `foo` and `crawler`.
                    let agent: String = match value.starts_with('*') {
                        true => "*".into(),
                        false => value
                            .chars()
                            .take_while(|c| c.is_ascii_alphabetic() || *c == '_' || *c == '-')
                            .collect(),
                    };
                    group.agents.push(agent.to_ascii_lowercase());
                }
                "allow" | "disallow" => {
                    group.has_rules = true;
                    // Rules before any user-agent line belong to no group.
                    if !value.is_empty() && !group.agents.is_empty() {
                        group.rules.push((key == "allow", normalize(value)));
                    }
                }
                "crawl-delay" => {
                    let secs = value.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0);
                    if let (Some(s), false) = (secs, group.agents.is_empty()) {
                        group.delay = Some(Duration::from_secs_f64(s.min(86_400.0)));
                    }
                }
                "sitemap" if !value.is_empty() => sitemaps.push(value.to_owned()),
                _ => {}
            }
        }
        finish(&mut group);
        let chosen = if ours.found { ours } else { star };
        Robots { rules: chosen.rules, crawl_delay: chosen.delay, sitemaps, unavailable: None }
    }

    /// Whether a URL path (with its query) may be fetched.
    pub fn allowed(&self, path_and_query: &str) -> bool {
        if self.unavailable.is_none() && path_and_query == "/robots.txt" {
            return true;
        }
        if self.rules.is_empty() {
            return true;
        }
        // Most paths are already in normal form (what the URL parser gives): no copy then.
        let path = match path_and_query.bytes().all(|c| c > b' ' && c < 0x7f && c != b'%') {
            true => std::borrow::Cow::Borrowed(path_and_query),
            false => std::borrow::Cow::Owned(normalize(path_and_query)),
        };
        let mut best: Option<(usize, bool)> = None;
        for (allow, pattern) in &self.rules {
            if matches(pattern, &path) {
                let len = pattern.len();
                best = match best {
                    Some((l, a)) if l > len || (l == len && a) => Some((l, a)),
                    _ => Some((len, *allow)),
                };
            }
        }
        best.is_none_or(|(_, allow)| allow)
    }
}

/// `key: value` with the key lower-cased; also `Disallow /x` with the colon missing, for the
/// three keys whose meaning is plain.
fn split_line(line: &str) -> Option<(String, &str)> {
    if let Some((key, value)) = line.split_once(':') {
        let key = key.trim().to_ascii_lowercase();
        if !key.contains(char::is_whitespace) {
            return Some((key, value.trim()));
        }
    }
    let (key, value) = line.split_once(char::is_whitespace)?;
    let key = key.to_ascii_lowercase();
    matches!(key.as_str(), "user-agent" | "allow" | "disallow").then(|| (key, value.trim()))
}

/// Percent-normalises a path or pattern so equal paths compare equal (RFC 9309 2.2.2): octets
/// outside printable ASCII are encoded, `%xx` of an unreserved character is decoded, every other
/// `%xx` is kept with upper-case hex. `*` and `$` are left alone (they are pattern syntax).
fn normalize(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let v = h * 16 + l;
                if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                    out.push(v as char);
                } else {
                    push_escaped(&mut out, v);
                }
                i += 3;
                continue;
            }
        }
        if c <= b' ' || c >= 0x7f {
            push_escaped(&mut out, c);
        } else {
            out.push(c as char);
        }
        i += 1;
    }
    out
}

/// Matches a robots.txt path pattern (`*` any run, trailing `$` end) against a path prefix.
fn matches(pattern: &str, path: &str) -> bool {
    let (pattern, anchored) = match pattern.strip_suffix('$') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = path.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    if parts.is_empty() {
        return !anchored || rest.is_empty();
    }
    for (i, part) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        if last && anchored {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(pos) => rest = &rest[pos + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests;

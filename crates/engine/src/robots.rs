//! robots.txt: parsing and the allow/deny decision for one user agent.
//!
//! Follows RFC 9309: the group whose user-agent is our product token (exactly, compared
//! case-insensitively; else `*`), the longest matching `Allow`/`Disallow` path wins, `Allow`
//! wins ties, `*` and `$` wildcards. Fetching and caching per host is the crawl's job, not this
//! module's; it decides that a missing robots.txt (4xx) allows all and an unavailable one
//! (5xx, unreachable) disallows all.

/// The rules of one robots.txt that apply to our user agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Robots {
    rules: Vec<(bool, String)>,
    /// Why everything is disallowed, when the robots.txt could not be read.
    unavailable: Option<String>,
}

impl Robots {
    /// A robots.txt that allows everything (missing file, 4xx).
    pub fn allow_all() -> Robots {
        Robots::default()
    }

    /// Everything disallowed because the robots.txt could not be read (5xx, unreachable), as
    /// RFC 9309 asks; `why` says what went wrong.
    pub fn unavailable(why: String) -> Robots {
        Robots { rules: vec![(false, "/".into())], unavailable: Some(why) }
    }

    /// Why the robots.txt could not be read, if it could not.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// Parses a robots.txt for the agent whose product token is taken from `user_agent`
    /// (the part before the first `/` or space, compared case-insensitively).
    pub fn parse(text: &str, user_agent: &str) -> Robots {
        let token = user_agent.split(['/', ' ']).next().unwrap_or("").to_ascii_lowercase();
        let mut specific: Option<Vec<(bool, String)>> = None;
        let mut star: Option<Vec<(bool, String)>> = None;
        // Agents of the group being read, and whether its rules have started.
        let mut agents: Vec<String> = Vec::new();
        let mut in_rules = false;
        let mut current: Vec<(bool, String)> = Vec::new();
        let mut finish = |agents: &mut Vec<String>, current: &mut Vec<(bool, String)>| {
            for a in agents.iter() {
                if a == "*" {
                    star.get_or_insert_with(Vec::new).extend(current.iter().cloned());
                } else if !token.is_empty() && *a == token {
                    specific.get_or_insert_with(Vec::new).extend(current.iter().cloned());
                }
            }
            agents.clear();
            current.clear();
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let Some((key, value)) = line.split_once(':') else { continue };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            match key.as_str() {
                "user-agent" => {
                    if in_rules {
                        finish(&mut agents, &mut current);
                        in_rules = false;
                    }
                    agents.push(value.to_ascii_lowercase());
                }
                "allow" | "disallow" => {
                    in_rules = true;
                    if !value.is_empty() {
                        current.push((key == "allow", value.to_owned()));
                    }
                }
                _ => {}
            }
        }
        finish(&mut agents, &mut current);
        Robots { rules: specific.or(star).unwrap_or_default(), unavailable: None }
    }

    /// Whether a URL path (with its query) may be fetched.
    pub fn allowed(&self, path_and_query: &str) -> bool {
        let mut best: Option<(usize, bool)> = None;
        for (allow, pattern) in &self.rules {
            if matches(pattern, path_and_query) {
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
mod tests {
    use super::*;

    const UA: &str = "crawler/0.1 (+https://example.invalid/bot)";

    #[test]
    fn only_our_exact_product_token_selects_a_group() {
        // A substring of our token, an empty agent line and another product are not us.
        for agent in ["c", "", "crawl", "crawler-other", "mycrawler"] {
            let text = format!("User-agent: {agent}\nDisallow: /\n\nUser-agent: *\nDisallow: /star/\n");
            let r = Robots::parse(&text, UA);
            assert!(r.allowed("/x"), "{agent:?} was taken for our group");
            assert!(!r.allowed("/star/x"), "{agent:?}");
        }
        // Our token in any case is.
        let r = Robots::parse("User-agent: CRAWLER\nDisallow: /mine/\n\nUser-agent: *\nDisallow: /\n", UA);
        assert!(r.allowed("/x"));
        assert!(!r.allowed("/mine/x"));
    }

    #[test]
    fn an_unavailable_robots_txt_disallows_everything() {
        let r = Robots::unavailable("http status 503".into());
        assert!(!r.allowed("/"));
        assert!(!r.allowed("/any?q=1"));
        assert_eq!(r.unavailable_reason(), Some("http status 503"));
        assert!(Robots::allow_all().allowed("/any"));
    }

    #[test]
    fn star_group_applies_when_no_specific_group() {
        let r = Robots::parse("User-agent: *\nDisallow: /private/\n", UA);
        assert!(!r.allowed("/private/x.html"));
        assert!(r.allowed("/public/x.html"));
        assert!(r.allowed("/"));
    }

    #[test]
    fn specific_group_wins_over_star() {
        let txt = "User-agent: *\nDisallow: /\n\nUser-agent: Crawler\nDisallow: /no\n";
        let r = Robots::parse(txt, UA);
        assert!(r.allowed("/yes"));
        assert!(!r.allowed("/no/x"));
        let other = Robots::parse(txt, "otherbot/1.0");
        assert!(!other.allowed("/yes"));
    }

    #[test]
    fn longest_match_wins_and_allow_wins_ties() {
        let r = Robots::parse("user-agent: *\ndisallow: /a\nallow: /a/b\nallow: /c\ndisallow: /c\n", UA);
        assert!(!r.allowed("/a/x"));
        assert!(r.allowed("/a/b/x"));
        assert!(r.allowed("/c"));
    }

    #[test]
    fn wildcards_and_anchors() {
        let r = Robots::parse("User-agent: *\nDisallow: /*.pdf$\nDisallow: /s*q=\n", UA);
        assert!(!r.allowed("/docs/a.pdf"));
        assert!(r.allowed("/docs/a.pdf?x=1"));
        assert!(!r.allowed("/search?q=1"));
        assert!(r.allowed("/search"));
    }

    #[test]
    fn grouped_agents_and_comments() {
        let r = Robots::parse("User-agent: a\nUser-agent: *  # all\nDisallow: /x # no\n", UA);
        assert!(!r.allowed("/x"));
        assert!(Robots::parse("garbage\n\0\nDisallow\n", UA).allowed("/x"));
        assert!(Robots::parse("User-agent: *\nDisallow:\n", UA).allowed("/x"));
    }
}

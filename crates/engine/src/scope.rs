//! URL handling for the frontier: normalization (the dedup key), link resolution and host
//! scoping. Pure functions, no I/O.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use url::Url;

/// Normalizes a URL for deduplication: drops the fragment. Parsing already lower-cases the
/// scheme and host, removes the scheme's default port and gives an empty path `/`.
pub fn normalize(mut url: Url) -> Url {
    url.set_fragment(None);
    url
}

/// Resolves a raw link (an `href` value) against the page URL and normalizes it.
/// Returns `None` for links that cannot be crawled: empty, non-http(s), or unparseable.
pub fn resolve_link(base: &Url, raw: &str) -> Option<Url> {
    let raw = raw.trim();
    if raw.is_empty() || raw.starts_with('#') {
        return None;
    }
    let url = base.join(raw).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    Some(normalize(url))
}

/// Whether a URL's host is one of the allowed hosts (exact match, case-insensitive).
pub fn host_allowed(url: &Url, allowed: &HashSet<String>) -> bool {
    url.host_str().is_some_and(|h| allowed.contains(h))
}

/// The 64-bit dedup key of a normalized URL; the same in every process of one build.
pub fn url_key(url: &Url) -> u64 {
    // `DefaultHasher::new()` is SipHash with fixed keys: deterministic and well mixed; a
    // collision among a million URLs has a probability of about 3e-8.
    let mut h = std::hash::DefaultHasher::new();
    url.as_str().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn normalization_drops_fragment_default_port_and_case() {
        assert_eq!(normalize(u("HTTP://Example.COM:80/a#frag")).as_str(), "http://example.com/a");
        assert_eq!(normalize(u("https://example.com:443")).as_str(), "https://example.com/");
        assert_eq!(normalize(u("http://example.com:8080/a?b=1#x")).as_str(), "http://example.com:8080/a?b=1");
    }

    #[test]
    fn links_resolve_against_the_page() {
        let base = u("http://h/dir/page.html");
        assert_eq!(resolve_link(&base, "../x.html#top").unwrap().as_str(), "http://h/x.html");
        assert_eq!(resolve_link(&base, "y.html").unwrap().as_str(), "http://h/dir/y.html");
        assert_eq!(resolve_link(&base, "//other/z").unwrap().as_str(), "http://other/z");
        assert!(resolve_link(&base, "#only-fragment").is_none());
        assert!(resolve_link(&base, "mailto:a@b").is_none());
        assert!(resolve_link(&base, "javascript:void(0)").is_none());
        assert!(resolve_link(&base, "  ").is_none());
    }

    #[test]
    fn hosts_are_scoped_exactly() {
        let allowed = HashSet::from(["example.com".to_owned()]);
        assert!(host_allowed(&u("http://EXAMPLE.com/x"), &allowed));
        assert!(!host_allowed(&u("http://www.example.com/x"), &allowed));
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent_and_fragment_blind(
            path in "[a-z0-9/]{0,20}", q in "[a-z0-9=&]{0,10}", frag in "[a-z0-9]{0,8}",
            port in prop_oneof![Just(80u16), Just(8080u16)],
        ) {
            let plain = u(&format!("http://Host.Example:{port}/{path}?{q}"));
            let with_frag = u(&format!("http://host.example:{port}/{path}?{q}#{frag}"));
            let n1 = normalize(plain);
            prop_assert_eq!(&normalize(n1.clone()), &n1);
            prop_assert_eq!(url_key(&n1), url_key(&normalize(with_frag)));
        }
    }
}

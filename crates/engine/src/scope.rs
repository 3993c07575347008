//! URL handling for the frontier: normalization (the dedup key), link resolution and host
//! scoping. Pure functions, no I/O.

use std::collections::HashSet;
use std::hash::Hasher;

use url::Url;

/// Normalizes a URL for deduplication: drops the fragment, and in the path and query decodes
/// percent-encoded unreserved characters (`%7E` is `~`, `%41` is `A`) and upper-cases the hex
/// of the other escapes (`%2f` is `%2F`), as RFC 3986 says they are the same URL. Parsing
/// already lower-cases the scheme and host, removes the scheme's default port and gives an
/// empty path `/`.
pub fn normalize(mut url: Url) -> Url {
    url.set_fragment(None);
    if url.as_str().contains('%') {
        if let std::borrow::Cow::Owned(path) = percent_normal(url.path()) {
            url.set_path(&path);
        }
        if let Some(std::borrow::Cow::Owned(query)) = url.query().map(percent_normal) {
            url.set_query(Some(&query));
        }
    }
    url
}

/// `text` with its escapes of unreserved characters decoded and the others' hex upper-cased;
/// borrowed when nothing changes.
fn percent_normal(text: &str) -> std::borrow::Cow<'_, str> {
    let b = text.as_bytes();
    let at = |i: usize| b.get(i).and_then(|c| hex(*c));
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(p) = text[i..].find('%').map(|p| i + p) {
        out.push_str(&text[i..p]);
        match (at(p + 1), at(p + 2)) {
            (Some(h), Some(l)) => {
                let c = h * 16 + l;
                // Not decoded where it would complete an escape with a `%` before it (`%%41B`
                // must not become `%AB`).
                let after_percent = out.ends_with('%')
                    || (out.len() >= 2
                        && out.as_bytes()[out.len() - 2] == b'%'
                        && out.ends_with(|d: char| d.is_ascii_hexdigit()));
                if (c.is_ascii_alphanumeric() || b"-._~".contains(&c)) && !after_percent {
                    out.push(c as char);
                } else {
                    push_escaped(&mut out, c);
                }
                i = p + 3;
            }
            _ => {
                out.push('%');
                i = p + 1;
            }
        }
    }
    out.push_str(&text[i..]);
    match out == text {
        true => std::borrow::Cow::Borrowed(text),
        false => std::borrow::Cow::Owned(out),
    }
}

/// The value of a hex digit.
pub(crate) fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Appends `v` percent-escaped, upper-case hex (`%7E`).
pub(crate) fn push_escaped(out: &mut String, v: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(v >> 4)] as char);
    out.push(HEX[usize::from(v & 15)] as char);
}

/// The longest URL followed (as Scrapy's `URLLENGTH_LIMIT`; browsers and servers commonly cap
/// near it): longer ones are trap URLs, and MySQL keys a page's item by its URL (3,000 bytes).
pub const MAX_URL_LEN: usize = 2083;

/// Resolves a raw link (an `href` value) against the page URL and normalizes it.
/// Returns `None` for links that cannot be crawled: empty, non-http(s), or unparseable.
pub fn resolve_link(base: &Url, raw: &str) -> Option<Url> {
    resolve_link_in(base, raw, encoding_rs::UTF_8)
}

/// Like [`resolve_link`], for a link of a page in `encoding`: its query is percent-encoded
/// from that encoding's bytes, as browsers send it (`?kw=小说` on a GBK page is
/// `?kw=%D0%A1%CB%B5`, not the UTF-8 bytes); its path is UTF-8 as always.
pub fn resolve_link_in(base: &Url, raw: &str, encoding: &'static encoding_rs::Encoding) -> Option<Url> {
    let raw = raw.trim();
    if raw.is_empty() || raw.starts_with('#') {
        return None;
    }
    let encoding = encoding.output_encoding();
    let encode = query_encoder(move |s| encoding.encode(s).0);
    let legacy: &dyn Fn(&str) -> std::borrow::Cow<'_, [u8]> = &encode;
    let url = Url::options()
        .base_url(Some(base))
        .encoding_override((encoding != encoding_rs::UTF_8).then_some(legacy))
        .parse(raw)
        .ok()
        .filter(|u| u.as_str().len() <= MAX_URL_LEN)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    Some(normalize(url))
}

/// Gives a closure the signature the URL parser takes for a query's encoding.
fn query_encoder<F: for<'s> Fn(&'s str) -> std::borrow::Cow<'s, [u8]>>(f: F) -> F {
    f
}

/// Whether a URL's host is one of the allowed hosts (exact match, case-insensitive).
pub fn host_allowed(url: &Url, allowed: &HashSet<String>) -> bool {
    url.host_str().is_some_and(|h| allowed.contains(h))
}

/// The 64-bit dedup key of a normalized URL. Keys are stored with a run's frontier, so they
/// must be the same in every build that may resume it: SipHash-1-3 with zero keys over the
/// URL's bytes and a 0xff terminator, which is what std's `DefaultHasher` gave for a `str`
/// when the keys were first stored (std does not promise to keep its algorithm). Well mixed:
/// a collision among a million URLs has a probability of about 3e-8.
pub fn url_key(url: &Url) -> u64 {
    stable_hash(url.as_str())
}

/// A hash of a string that never changes between builds (see [`url_key`]).
pub fn stable_hash(s: &str) -> u64 {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    h.write(s.as_bytes());
    h.write_u8(0xff);
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
    fn url_keys_are_the_stored_ones() {
        // Values the keys of stored frontiers have had since they were first written; a
        // change here makes every resumed run fetch its pages again.
        assert_eq!(url_key(&u("http://books.toscrape.com/catalogue/page-2.html")), 0xb54684b0a4df0b00);
        assert_eq!(url_key(&u("https://example.com/")), 0x9cc8cc3c185320c2);
        assert_eq!(stable_hash("http://127.0.0.1:8080/a?b=%C3%A9"), 0x890d8deae4465b1b);
        assert_eq!(stable_hash(""), 0x30406ea523c53def);
    }

    #[test]
    fn normalization_drops_fragment_default_port_and_case() {
        assert_eq!(normalize(u("HTTP://Example.COM:80/a#frag")).as_str(), "http://example.com/a");
        assert_eq!(normalize(u("https://example.com:443")).as_str(), "https://example.com/");
        assert_eq!(normalize(u("http://example.com:8080/a?b=1#x")).as_str(), "http://example.com:8080/a?b=1");
    }

    #[test]
    fn normalization_decodes_unreserved_escapes_and_upper_cases_the_others() {
        let n = |s: &str| normalize(u(s)).as_str().to_owned();
        assert_eq!(
            n("http://h/%7euser/a%2fb%41?x=%7E%2d&y=%e4%bd%a0#f"),
            "http://h/~user/a%2FbA?x=~-&y=%E4%BD%A0"
        );
        // One page, one key.
        let key = url_key(&normalize(u("http://h/~user/")));
        assert_eq!(url_key(&normalize(u("http://h/%7Euser/"))), key);
        assert_eq!(url_key(&normalize(u("http://h/%7euser/"))), key);
        // Untouched: reserved escapes, a bare or short %, no escapes at all.
        assert_eq!(n("http://h/a%2Fb?q=%26%3D"), "http://h/a%2Fb?q=%26%3D");
        assert_eq!(n("http://h/100%25/x%?y=%4"), "http://h/100%25/x%?y=%4");
        assert_eq!(n("http://h/plain?q=1"), "http://h/plain?q=1");
        // A bare % before an escape of a hex digit: no new escape appears.
        assert_eq!(n("http://h/x%%41B"), "http://h/x%%41B");
        assert_eq!(n("http://h/x%%34%31"), "http://h/x%%341");
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
        // A GBK page's link: its query in GBK bytes, its path in UTF-8 (as browsers send them).
        let gbk = resolve_link_in(&base, "/搜索?kw=小说&n=1", encoding_rs::GBK).unwrap();
        assert_eq!(gbk.as_str(), "http://h/%E6%90%9C%E7%B4%A2?kw=%D0%A1%CB%B5&n=1");
        let utf8 = resolve_link_in(&base, "/s?kw=小说", encoding_rs::UTF_8).unwrap();
        assert_eq!(utf8.as_str(), "http://h/s?kw=%E5%B0%8F%E8%AF%B4");
        // Over 2,083 bytes: not followed.
        let long = format!("/p?q={}", "a".repeat(2083));
        assert!(resolve_link(&base, &long).is_none());
        assert!(resolve_link(&base, &long[..2083 - "http://h".len()]).is_some());
        // A UTF-16 page's links are UTF-8, as its output encoding is.
        assert_eq!(resolve_link_in(&base, "/s?kw=小说", encoding_rs::UTF_16LE).unwrap(), utf8);
    }

    #[test]
    fn hosts_are_scoped_exactly() {
        let allowed = HashSet::from(["example.com".to_owned()]);
        assert!(host_allowed(&u("http://EXAMPLE.com/x"), &allowed));
        assert!(!host_allowed(&u("http://www.example.com/x"), &allowed));
    }

    proptest! {
        #[test]
        fn normalization_of_escapes_is_idempotent(
            path in "(%|%4|%41|%61|%3|%33|%7[eE]|%2[fF]|%[0-9a-fA-F]{2}|[aB1~._-]){0,10}",
            q in "(%|%4|%41|%7e|%2f|[aB1=&]){0,8}",
        ) {
            if let Ok(url) = Url::parse(&format!("http://h/{path}?{q}")) {
                let once = normalize(url);
                let twice = normalize(once.clone());
                prop_assert_eq!(twice.as_str(), once.as_str());
            }
        }

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

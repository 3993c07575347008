//! Sitemaps (sitemaps.org): a `<urlset>` of page URLs or a `<sitemapindex>` of further
//! sitemaps, plain or gzipped; and the other forms the protocol accepts: a text file of URLs,
//! one per line, and RSS 2.0 / RSS 1.0 / Atom feeds (their entries' links). Pure: bytes in,
//! locations out; fetching them is the crawl's job.

use std::borrow::Cow;
use std::io::Read;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// The largest sitemap read, uncompressed (the protocol's own limit).
pub const MAX_SITEMAP_BYTES: u64 = 50 * 1024 * 1024;
/// Locations read from one sitemap (the protocol's own limit); the rest are ignored.
pub const MAX_SITEMAP_URLS: usize = 50_000;
/// Sitemap files read per crawl, indexes included.
pub const MAX_SITEMAP_FILES: usize = 1_000;

/// What one sitemap file lists.
#[derive(Debug, PartialEq, Eq)]
pub enum Sitemap {
    /// Page URLs (`<urlset>`, a text sitemap, a feed's entries).
    Pages(Vec<String>),
    /// Further sitemaps (`<sitemapindex>`).
    Index(Vec<String>),
}

/// A sitemap that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SitemapError {
    /// Bad gzip data.
    #[error("gzip: {0}")]
    Gzip(String),
    /// Larger than [`MAX_SITEMAP_BYTES`] once uncompressed.
    #[error("larger than {MAX_SITEMAP_BYTES} bytes uncompressed")]
    TooLarge,
    /// Malformed XML.
    #[error("xml: {0}")]
    Xml(String),
    /// Well-formed, but neither a sitemap, a sitemap index nor a feed.
    #[error("not a sitemap (root element <{0}>)")]
    NotSitemap(String),
    /// Not XML, and no line of it is an http(s) URL.
    #[error("not a sitemap (neither XML nor a list of URLs)")]
    NotText,
}

/// What the root element says the file is.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Urlset,
    Index,
    /// RSS 2.0: `rss > channel > item > link`.
    Rss,
    /// RSS 1.0: `rdf:RDF > item > link`.
    Rdf,
    /// Atom: `feed > entry > link href=...` (no `rel`, or `rel="alternate"`).
    Atom,
}

/// Reads a sitemap, sitemap index, text sitemap or feed; gzip is recognised by its magic bytes
/// (whatever the file is called or served as). Only the locations of entries count, so the
/// `<image:loc>` of image sitemaps and a feed's own link are not taken for pages. A location
/// with a bare `&` (many generators write them) is read as written.
pub fn parse(body: &[u8]) -> Result<Sitemap, SitemapError> {
    let unzipped;
    let data = if body.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(body)
            .take(MAX_SITEMAP_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| SitemapError::Gzip(e.to_string()))?;
        unzipped = out;
        &unzipped[..]
    } else {
        body
    };
    if data.len() as u64 > MAX_SITEMAP_BYTES {
        return Err(SitemapError::TooLarge);
    }
    let start = data.strip_prefix(b"\xef\xbb\xbf").unwrap_or(data);
    match start.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'<') | None => parse_xml(data),
        Some(_) => parse_text(start),
    }
}

/// A text sitemap: one URL per line; lines that are not http(s) URLs are skipped.
fn parse_text(text: &[u8]) -> Result<Sitemap, SitemapError> {
    let text = String::from_utf8_lossy(text);
    let is_url = |l: &&str| {
        let scheme = l.get(..8).unwrap_or(l).to_ascii_lowercase();
        scheme.starts_with("http://") || scheme.starts_with("https://")
    };
    let locs: Vec<String> =
        text.lines().map(str::trim).filter(is_url).take(MAX_SITEMAP_URLS).map(str::to_owned).collect();
    match locs.is_empty() {
        true => Err(SitemapError::NotText),
        false => Ok(Sitemap::Pages(locs)),
    }
}

fn parse_xml(xml: &[u8]) -> Result<Sitemap, SitemapError> {
    let mut reader = Reader::from_reader(xml);
    reader.trim_text(true);
    reader.check_end_names(false);
    let xml_err = |e: quick_xml::Error| SitemapError::Xml(e.to_string());
    let mut kind = None;
    // The local names of the open elements.
    let mut path: Vec<Vec<u8>> = Vec::new();
    // Inside an entry's location element: how deep it is, and its text so far.
    let mut loc: Option<(usize, String)> = None;
    let mut locs = Vec::new();
    loop {
        let event = reader.read_event().map_err(xml_err)?;
        let (Event::Start(e) | Event::Empty(e)) = &event else {
            match event {
                Event::Text(t) => {
                    if let Some((_, l)) = &mut loc {
                        match t.unescape() {
                            Ok(text) => l.push_str(&text),
                            Err(_) => l.push_str(&unescape_leniently(&String::from_utf8_lossy(&t))),
                        }
                    }
                }
                Event::CData(c) => {
                    if let Some((_, l)) = &mut loc {
                        l.push_str(&String::from_utf8_lossy(&c.into_inner()));
                    }
                }
                Event::End(_) => {
                    if loc.as_ref().is_some_and(|(depth, _)| *depth == path.len()) {
                        if let Some((_, l)) = loc.take() {
                            push_loc(&mut locs, &l);
                        }
                    }
                    path.pop();
                    if locs.len() >= MAX_SITEMAP_URLS {
                        break;
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            continue;
        };
        let name = e.local_name().as_ref().to_ascii_lowercase();
        if path.is_empty() {
            kind = Some(match name.as_slice() {
                b"urlset" => Kind::Urlset,
                b"sitemapindex" => Kind::Index,
                b"rss" => Kind::Rss,
                b"rdf" => Kind::Rdf,
                b"feed" => Kind::Atom,
                other => return Err(SitemapError::NotSitemap(String::from_utf8_lossy(other).into_owned())),
            });
        }
        path.push(name);
        let entry = kind.is_some_and(|k| is_location(k, &path));
        if entry && kind == Some(Kind::Atom) {
            if let Some(href) = atom_href(e) {
                push_loc(&mut locs, &href);
            }
        } else if entry && loc.is_none() {
            loc = Some((path.len(), String::new()));
        }
        if matches!(event, Event::Empty(_)) {
            path.pop();
            if entry {
                loc = None;
            }
        }
    }
    match kind {
        Some(Kind::Index) => Ok(Sitemap::Index(locs)),
        Some(_) => Ok(Sitemap::Pages(locs)),
        None => Err(SitemapError::Xml("no root element".into())),
    }
}

/// Whether the element at the end of `path` holds an entry's location.
fn is_location(kind: Kind, path: &[Vec<u8>]) -> bool {
    let at = |i: usize, name: &[u8]| path.get(i).is_some_and(|n| n == name);
    match kind {
        // Any entry element: the `<loc>` of a `<url>` or a `<sitemap>`.
        Kind::Urlset | Kind::Index => path.len() == 3 && at(2, b"loc"),
        Kind::Rss => path.len() == 4 && at(2, b"item") && at(3, b"link"),
        Kind::Rdf => path.len() == 3 && at(1, b"item") && at(2, b"link"),
        Kind::Atom => path.len() == 3 && at(1, b"entry") && at(2, b"link"),
    }
}

fn push_loc(locs: &mut Vec<String>, loc: &str) {
    let loc = loc.trim();
    if !loc.is_empty() && locs.len() < MAX_SITEMAP_URLS {
        locs.push(loc.to_owned());
    }
}

/// An Atom link's `href`, when it links to the entry itself (no `rel`, or `alternate`).
fn atom_href(e: &BytesStart) -> Option<String> {
    let mut href = None;
    for a in e.attributes().flatten() {
        let value = a
            .unescape_value()
            .map(Cow::into_owned)
            .unwrap_or_else(|_| unescape_leniently(&String::from_utf8_lossy(&a.value)));
        match a.key.local_name().as_ref() {
            b"href" => href = Some(value),
            b"rel" if value != "alternate" => return None,
            _ => {}
        }
    }
    href
}

/// XML's escapes (`&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&#N;`, `&#xN;`) decoded, and an
/// `&` that starts none of them kept as written.
fn unescape_leniently(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        // Only the next few bytes can close an escape (a text of many `&` and no `;` would
        // otherwise be searched to its end at each).
        let window = &rest.as_bytes()[1..rest.len().min(12)];
        let entity = window.iter().position(|b| *b == b';').map(|end| &rest[1..1 + end]);
        let decoded = entity.and_then(|e| match e {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => {
                let n = match e.strip_prefix("#x").or_else(|| e.strip_prefix("#X")) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => e.strip_prefix('#').and_then(|d| d.parse().ok()),
                };
                n.and_then(char::from_u32)
            }
        });
        match (entity, decoded) {
            (Some(e), Some(c)) => {
                out.push(c);
                rest = &rest[e.len() + 2..];
            }
            _ => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn a_urlset_lists_its_page_locations() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
            <urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"
                    xmlns:image="http://www.google.com/schemas/sitemap-image/1.1">
              <url><loc> http://h/a?x=1&amp;y=2 </loc><lastmod>2024-01-01</lastmod>
                <image:image><image:loc>http://h/pic.png</image:loc></image:image></url>
              <!-- <url><loc>http://h/commented</loc></url> -->
              <url><loc><![CDATA[http://h/b]]></loc></url>
              <url><loc></loc></url>
            </urlset>"#;
        assert_eq!(
            parse(xml).unwrap(),
            Sitemap::Pages(vec!["http://h/a?x=1&y=2".into(), "http://h/b".into()])
        );
        assert_eq!(parse(&gzip(xml)).unwrap(), parse(xml).unwrap());
    }

    #[test]
    fn an_index_lists_sitemaps() {
        let xml = b"<sitemapindex><sitemap><loc>http://h/s1.xml.gz</loc></sitemap>\
                    <sitemap><loc>http://h/s2.xml</loc></sitemap></sitemapindex>";
        assert_eq!(
            parse(xml).unwrap(),
            Sitemap::Index(vec!["http://h/s1.xml.gz".into(), "http://h/s2.xml".into()])
        );
        assert_eq!(parse(b"<urlset/>").unwrap(), Sitemap::Pages(vec![]));
        // Markup inside a <loc> does not end it.
        let odd =
            b"<urlset><url><loc>http://h/<b>x</b>y</loc></url><url><loc>http://h/z</loc></url></urlset>";
        assert_eq!(parse(odd).unwrap(), Sitemap::Pages(vec!["http://h/xy".into(), "http://h/z".into()]));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(
            matches!(parse(b"<html><body>hi</body></html>"), Err(SitemapError::NotSitemap(r)) if r == "html")
        );
        assert!(matches!(parse(b"\x1f\x8bnot gzip at all"), Err(SitemapError::Gzip(_))));
        assert!(matches!(parse(b""), Err(SitemapError::Xml(_))));
        assert!(parse(b"<urlset><url><loc>http://h/a</loc></url><url><loc>http://h/b").is_ok());
        // A gzip bomb stops at the limit.
        let bomb = gzip(&vec![b' '; MAX_SITEMAP_BYTES as usize + 10]);
        assert!(bomb.len() < 1 << 20);
        assert!(matches!(parse(&bomb), Err(SitemapError::TooLarge)));
    }

    #[test]
    fn a_bare_ampersand_keeps_its_location_and_the_rest() {
        // Generators that do not escape `&` are common; one such <loc> threw the whole file away.
        let xml = b"<urlset><url><loc>http://h/a?x=1&y=2&amp;z=3&#x41;</loc></url>\
                    <url><loc>http://h/b?q=&nbsp;</loc></url><url><loc>http://h/c</loc></url></urlset>";
        assert_eq!(
            parse(xml).unwrap(),
            Sitemap::Pages(vec![
                "http://h/a?x=1&y=2&z=3A".into(),
                "http://h/b?q=&nbsp;".into(),
                "http://h/c".into()
            ])
        );
        assert_eq!(
            unescape_leniently("a&b&amp;&#233;&#xZZ;&toolongentityname;&"),
            "a&b&é&#xZZ;&toolongentityname;&"
        );
    }

    #[test]
    fn a_text_sitemap_lists_one_url_per_line() {
        let text = b"\xef\xbb\xbfhttp://h/a\r\n\n  https://h/b?x=1&y=2  \nnot a url\nftp://h/c\nHTTP://h/d\n";
        let want =
            Sitemap::Pages(vec!["http://h/a".into(), "https://h/b?x=1&y=2".into(), "HTTP://h/d".into()]);
        assert_eq!(parse(text).unwrap(), want);
        assert_eq!(parse(&gzip(text)).unwrap(), want);
        assert!(matches!(parse(b"hello\nworld\n"), Err(SitemapError::NotText)));
    }

    #[test]
    fn feeds_list_their_entries_links() {
        let rss = br#"<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
            <link>http://h/</link>
            <item><title>One</title><link>http://h/1</link><guid>x</guid></item>
            <item><link> http://h/2?a=1&amp;b=2 </link></item></channel></rss>"#;
        assert_eq!(
            parse(rss).unwrap(),
            Sitemap::Pages(vec!["http://h/1".into(), "http://h/2?a=1&b=2".into()])
        );
        let rdf = br#"<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/">
            <channel><link>http://h/</link></channel>
            <item><link>http://h/3</link></item></rdf:RDF>"#;
        assert_eq!(parse(rdf).unwrap(), Sitemap::Pages(vec!["http://h/3".into()]));
        let atom = br#"<feed xmlns="http://www.w3.org/2005/Atom"><link href="http://h/"/>
            <link rel="self" href="http://h/feed"/>
            <entry><link rel="edit" href="http://h/edit/4"/><link href="http://h/4"/></entry>
            <entry><link rel="alternate" href="http://h/5?a&amp;b"></link></entry></feed>"#;
        assert_eq!(parse(atom).unwrap(), Sitemap::Pages(vec!["http://h/4".into(), "http://h/5?a&b".into()]));
    }

    #[test]
    fn at_most_the_protocol_limit_of_urls() {
        let mut xml = String::from("<urlset>");
        for i in 0..MAX_SITEMAP_URLS + 5 {
            xml.push_str(&format!("<url><loc>http://h/{i}</loc></url>"));
        }
        xml.push_str("</urlset>");
        let Sitemap::Pages(locs) = parse(xml.as_bytes()).unwrap() else { panic!() };
        assert_eq!(locs.len(), MAX_SITEMAP_URLS);
    }
}

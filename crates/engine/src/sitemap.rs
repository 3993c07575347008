//! Sitemaps (sitemaps.org): a `<urlset>` of page URLs or a `<sitemapindex>` of further
//! sitemaps, plain or gzipped. Pure: bytes in, locations out; fetching them is the crawl's job.

use std::io::Read;

use quick_xml::events::Event;
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
    /// Page URLs (`<urlset>`).
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
    /// Well-formed, but neither a `<urlset>` nor a `<sitemapindex>`.
    #[error("not a sitemap (root element <{0}>)")]
    NotSitemap(String),
}

/// Reads a sitemap or sitemap index; gzip is recognised by its magic bytes (whatever the
/// file is called or served as). Only `<loc>` elements of `<url>`/`<sitemap>` entries count,
/// so the `<image:loc>` of image sitemaps are not taken for pages.
pub fn parse(body: &[u8]) -> Result<Sitemap, SitemapError> {
    let unzipped;
    let xml = if body.starts_with(&[0x1f, 0x8b]) {
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
    if xml.len() as u64 > MAX_SITEMAP_BYTES {
        return Err(SitemapError::TooLarge);
    }
    let mut reader = Reader::from_reader(xml);
    reader.trim_text(true);
    reader.check_end_names(false);
    let xml_err = |e: quick_xml::Error| SitemapError::Xml(e.to_string());
    let mut index = None;
    let mut depth = 0usize;
    // Inside a `<loc>` of an entry: its text so far.
    let mut loc: Option<String> = None;
    let mut locs = Vec::new();
    loop {
        match reader.read_event().map_err(xml_err)? {
            Event::Start(e) => {
                depth += 1;
                let name = e.local_name();
                match (depth, name.as_ref()) {
                    (1, b"urlset") => index = Some(false),
                    (1, b"sitemapindex") => index = Some(true),
                    (1, other) => {
                        return Err(SitemapError::NotSitemap(String::from_utf8_lossy(other).into_owned()))
                    }
                    (3, b"loc") => loc = Some(String::new()),
                    _ => {}
                }
            }
            Event::Empty(e) if depth == 0 => {
                let name = e.local_name();
                match name.as_ref() {
                    b"urlset" => return Ok(Sitemap::Pages(locs)),
                    b"sitemapindex" => return Ok(Sitemap::Index(locs)),
                    other => {
                        return Err(SitemapError::NotSitemap(String::from_utf8_lossy(other).into_owned()))
                    }
                }
            }
            Event::Text(t) => {
                if let Some(l) = &mut loc {
                    l.push_str(&t.unescape().map_err(xml_err)?);
                }
            }
            Event::CData(c) => {
                if let Some(l) = &mut loc {
                    l.push_str(&String::from_utf8_lossy(&c.into_inner()));
                }
            }
            Event::End(_) if depth == 3 && loc.is_some() => {
                if let Some(l) = loc.take() {
                    let l = l.trim();
                    if !l.is_empty() {
                        locs.push(l.to_owned());
                    }
                    if locs.len() >= MAX_SITEMAP_URLS {
                        break;
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => break,
            _ => {}
        }
    }
    match index {
        Some(true) => Ok(Sitemap::Index(locs)),
        Some(false) => Ok(Sitemap::Pages(locs)),
        None => Err(SitemapError::Xml("no root element".into())),
    }
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

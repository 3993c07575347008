//! Decoding fetched HTML to UTF-8: byte-order mark, then the HTTP `Content-Type` charset,
//! then `<meta charset>` / `http-equiv` in the first 1024 bytes, then statistical detection.

use std::borrow::Cow;

use encoding_rs::{Encoding, UTF_8};

/// Decodes an HTML body. Malformed sequences become U+FFFD; this never fails.
pub fn decode_html<'a>(body: &'a [u8], content_type: Option<&str>) -> Cow<'a, str> {
    decode_page(body, content_type).0
}

/// Decodes an HTML body as [`decode_html`] does, and says with which encoding (the one its
/// links' queries are written in, as browsers send them).
pub fn decode_page<'a>(body: &'a [u8], content_type: Option<&str>) -> (Cow<'a, str>, &'static Encoding) {
    let encoding = sniff(body, content_type);
    let (text, used, _) = encoding.decode(body);
    (text, used)
}

/// The encoding a body should be decoded with.
pub fn sniff(body: &[u8], content_type: Option<&str>) -> &'static Encoding {
    if let Some((enc, _)) = Encoding::for_bom(body) {
        return enc;
    }
    if let Some(enc) = content_type.and_then(charset_param).and_then(Encoding::for_label) {
        return html_compatible(enc);
    }
    if let Some(enc) = meta_charset(&body[..body.len().min(1024)]) {
        return html_compatible(enc);
    }
    if std::str::from_utf8(body).is_ok() {
        return UTF_8;
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(body, true);
    detector.guess(None, true)
}

/// UTF-16 labels in a document that was read as ASCII are wrong by construction (HTML spec).
fn html_compatible(enc: &'static Encoding) -> &'static Encoding {
    if enc == encoding_rs::UTF_16BE || enc == encoding_rs::UTF_16LE {
        UTF_8
    } else {
        enc
    }
}

fn charset_param(content_type: &str) -> Option<&[u8]> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("charset").then(|| v.trim().trim_matches(['"', '\'']).as_bytes())
    })
}

/// Finds a charset declared in a `<meta>` tag of the given prefix of a document.
fn meta_charset(head: &[u8]) -> Option<&'static Encoding> {
    let lower: Vec<u8> = head.iter().map(u8::to_ascii_lowercase).collect();
    let mut from = 0;
    while let Some(pos) = find(&lower[from..], b"<meta") {
        // A comment before it is skipped whole, as the HTML prescan does: a `<meta>` in a
        // comment (an old declaration left commented out) declares nothing.
        if let Some(c) = find(&lower[from..from + pos], b"<!--") {
            let open = from + c + 4;
            from = find(&lower[open..], b"-->").map_or(lower.len(), |e| open + e + 3);
            continue;
        }
        let start = from + pos + 5;
        let end = lower[start..].iter().position(|&b| b == b'>').map_or(lower.len(), |e| start + e);
        let tag = &lower[start..end];
        if let Some(cs) = find(tag, b"charset") {
            let mut rest = &tag[cs + 7..];
            rest = trim_start(rest);
            if let Some(r) = rest.strip_prefix(b"=") {
                let r = trim_start(r);
                let r = r.strip_prefix(b"\"").or_else(|| r.strip_prefix(b"'")).unwrap_or(r);
                let len = r
                    .iter()
                    .position(|&b| matches!(b, b'"' | b'\'' | b';' | b' ' | b'/' | b'>'))
                    .unwrap_or(r.len());
                if let Some(enc) = Encoding::for_label(&r[..len]) {
                    return Some(enc);
                }
            }
        }
        from = end;
    }
    None
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    &b[n..]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gbk(s: &str) -> Vec<u8> {
        encoding_rs::GBK.encode(s).0.into_owned()
    }

    #[test]
    fn http_charset_comes_first() {
        let body = gbk("<p>中文标题</p>");
        assert_eq!(decode_html(&body, Some("text/html; charset=GBK")), "<p>中文标题</p>");
        assert_eq!(decode_html(&body, Some("text/html; charset=\"gb2312\"")), "<p>中文标题</p>");
    }

    #[test]
    fn a_meta_charset_in_a_comment_declares_nothing() {
        let body = gbk("<!-- <meta charset=\"iso-8859-1\"> --><meta charset=\"gbk\"><h1>网络爬虫</h1>");
        assert_eq!(
            decode_html(&body, Some("text/html")),
            "<!-- <meta charset=\"iso-8859-1\"> --><meta charset=\"gbk\"><h1>网络爬虫</h1>"
        );
        // An unclosed comment hides the rest; then the text is detected (GBK here).
        let body = gbk("<!-- <meta charset=\"iso-8859-1\"> <h1>网络爬虫，分布式的网络爬虫</h1>");
        assert_eq!(meta_charset(&body), None);
        assert_eq!(meta_charset(b"<!----><meta charset=utf-8>"), Some(UTF_8));
    }

    #[test]
    fn meta_charset_when_http_is_silent() {
        let body = gbk("<html><head><meta charset=\"gbk\"></head><body>书名</body></html>");
        assert!(decode_html(&body, Some("text/html")).contains("书名"));
        let body = gbk("<meta http-equiv=\"Content-Type\" content=\"text/html; charset=gb2312\"><b>作者</b>");
        assert!(decode_html(&body, None).contains("作者"));
    }

    #[test]
    fn detection_when_nothing_is_declared() {
        let body = gbk("<html><body><h1>这是一本关于网络爬虫的中文书籍，作者是张三。</h1></body></html>");
        assert!(decode_html(&body, Some("text/html")).contains("网络爬虫"));
        assert_eq!(decode_html("héllo".as_bytes(), None), "héllo");
    }

    #[test]
    fn bom_wins() {
        let mut body = vec![0xEF, 0xBB, 0xBF];
        body.extend_from_slice("ü".as_bytes());
        assert_eq!(decode_html(&body, Some("text/html; charset=latin1")), "ü");
    }
}

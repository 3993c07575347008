//! How deep a page nests, as the extractor's parser sees it.
//!
//! lol_html keeps a stack of open elements (it closes an element only at a matching end tag,
//! never implicitly), and each descendant selector walks that stack for every element: a page
//! nested 100,000 deep costs billions of steps. This scan mirrors that stack cheaply (one
//! `memchr` pass, no allocation per tag) and says where a page first goes deeper than a limit,
//! so the extractor can stop there.

/// Elements that never have content.
const VOID: &[&[u8]] = &[
    b"area", b"base", b"br", b"col", b"embed", b"hr", b"img", b"input", b"link", b"meta", b"source",
    b"track", b"wbr", b"param", b"keygen",
];

/// Elements whose content is text up to their end tag (to a parser that runs scripts).
const RAW: &[&[u8]] =
    &[b"script", b"style", b"textarea", b"title", b"xmp", b"iframe", b"noembed", b"noframes", b"noscript"];

/// The byte offset of the start tag that first opens element number `max + 1` on the stack of
/// open elements, if the page gets that deep. The offset is at a `<`, so it is a `str` boundary.
pub fn too_deep_at(html: &[u8], max: usize) -> Option<usize> {
    // Every open element takes at least three bytes (`<a>`): a short page cannot be too deep.
    if html.len() / 3 <= max {
        return None;
    }
    // Names of the open elements, as (length, first 8 bytes lower-cased): exact enough to
    // mirror end-tag matching, and no allocation per tag; and whether each starts foreign
    // content (svg, math), where `<x/>` closes itself and nothing is raw text.
    let mut stack: Vec<(usize, u64, bool)> = Vec::new();
    let mut foreign = 0usize;
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'<', &html[i..]) {
        let at = i + off;
        let rest = &html[at + 1..];
        if rest.starts_with(b"!--") {
            // `<!-->` and `<!--->` are whole (empty) comments to an HTML parser.
            i = if rest[3..].starts_with(b">") {
                at + 5
            } else if rest[3..].starts_with(b"->") {
                at + 6
            } else {
                find(html, at + 4, b"-->").map_or(html.len(), |e| e + 3)
            };
            continue;
        }
        if rest.first().is_some_and(|c| *c == b'!' || *c == b'?') {
            i = memchr::memchr(b'>', rest).map_or(html.len(), |e| at + 1 + e + 1);
            continue;
        }
        let closing = rest.first() == Some(&b'/');
        let name_at = at + 1 + usize::from(closing);
        let len = html[name_at..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'-').count();
        if len == 0 || !html[name_at].is_ascii_alphabetic() {
            i = at + 1;
            continue;
        }
        let name = &html[name_at..name_at + len];
        let end = tag_end(html, name_at + len);
        let key = (len, key_of(name));
        let starts_foreign = name.eq_ignore_ascii_case(b"svg") || name.eq_ignore_ascii_case(b"math");
        let self_closing = end >= 2 && html[end - 2] == b'/' && html[end - 1] == b'>';
        if closing {
            if let Some(p) = stack.iter().rposition(|(l, k, _)| (*l, *k) == key) {
                foreign -= stack[p..].iter().filter(|e| e.2).count();
                stack.truncate(p);
            }
        } else if foreign == 0 && RAW.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            // Skip the text up to the matching end tag.
            i = end_tag(html, end, name).unwrap_or(html.len());
            continue;
        } else if (foreign > 0 || starts_foreign) && self_closing {
            // A foreign element closes itself.
        } else if !VOID.iter().any(|v| v.eq_ignore_ascii_case(name)) {
            stack.push((key.0, key.1, starts_foreign));
            foreign += usize::from(starts_foreign);
            if stack.len() > max {
                return Some(at);
            }
        }
        i = end;
    }
    None
}

fn key_of(name: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    for (d, s) in k.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    u64::from_le_bytes(k)
}

/// The offset just past the `>` that ends a tag whose attributes start at `from` (quoted
/// attribute values may hold `>`).
fn tag_end(html: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(off) = memchr::memchr3(b'>', b'"', b'\'', &html[i..]) {
        let at = i + off;
        match html[at] {
            b'>' => return at + 1,
            quote => match memchr::memchr(quote, &html[at + 1..]) {
                Some(close) => i = at + 1 + close + 1,
                None => break,
            },
        }
    }
    html.len()
}

/// The offset just past `</name ...>` at or after `from`, case-insensitively.
fn end_tag(html: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    let mut i = from;
    while let Some(off) = find(html, i, b"</") {
        let n = off + 2;
        if html.len() >= n + name.len() && html[n..n + name.len()].eq_ignore_ascii_case(name) {
            return Some(tag_end(html, n + name.len()));
        }
        i = off + 2;
    }
    None
}

fn find(html: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(html.get(from..)?, needle).map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_mirrors_the_parser_stack() {
        // Padded past the short-page shortcut.
        let deep = |n: usize| format!("<html><body>{}<a href=x>y</a>{}", "<div>".repeat(n), " ".repeat(64));
        // html, body, the divs and the a.
        assert_eq!(too_deep_at(deep(9).as_bytes(), 12), None);
        let page = deep(10);
        let at = too_deep_at(page.as_bytes(), 12).unwrap();
        assert_eq!(&page[at..at + 15], "<a href=x>y</a>");
        // Closed elements, void elements, comments, doctypes and raw text do not count.
        let flat = "<!DOCTYPE html><p>a</p><p>b</p><br><img src='>'><!-- <div><div><div> -->\
                    <script>if (a<b) document.write('<div><div><div>')</script><DIV></div>";
        assert_eq!(too_deep_at(flat.as_bytes(), 1), None);
        // An end tag closes everything opened inside it, as in the parser.
        let nested = "<div><span><b><i></div><div><span>";
        assert_eq!(too_deep_at(nested.as_bytes(), 4), None);
        assert_eq!(too_deep_at(nested.as_bytes(), 3), Some(nested.find("<i>").unwrap()));
        // Unclosed paragraphs stay open for the parser, so they count.
        assert!(too_deep_at("<p>a<p>b<p>c".as_bytes(), 2).is_some());
        // Empty comments end at once; in svg, `<x/>` closes itself and <title> is markup.
        let comment = format!("<!--><p>a</p>{}", "<div>".repeat(3));
        assert!(too_deep_at(comment.as_bytes(), 2).is_some());
        let comment = format!("<!---><p>a</p>{}", "<div>".repeat(3));
        assert!(too_deep_at(comment.as_bytes(), 2).is_some());
        let svg = format!("<svg>{}</svg><div><div>", "<path d='M0 0'/>".repeat(50));
        assert_eq!(too_deep_at(svg.as_bytes(), 3), None);
        let svg = format!("<svg><title>{}", "<g>".repeat(10));
        assert!(too_deep_at(svg.as_bytes(), 5).is_some());
        // Outside foreign content `<div/>` opens a div, as for the parser.
        assert!(too_deep_at("<div/><div/><div/><div/>".as_bytes(), 3).is_some());
        // Junk does not panic.
        for junk in ["<", "</", "<a", "<a '", "<!--", "<script>", "<1>", "< div>", "<ä>"] {
            let _ = too_deep_at(junk.as_bytes(), 0);
        }
    }
}

//! Extraction: links to follow and item fields from one HTML page, in a single streaming pass
//! with lol_html (no DOM is built). Pure: a page in, links and fields out.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use lol_html::html_content::{Element, EndTag, TextChunk};
use lol_html::{ElementContentHandlers, HtmlRewriter, MemorySettings, Selector, Settings};
use url::Url;

use crate::nesting::prepare;
use crate::scope::{host_allowed, resolve_link_in};
use crate::spec::Rule;
use htmlize::{unescape, unescape_attribute};

/// What one page yielded.
#[derive(Debug, Default, PartialEq)]
pub struct Extracted {
    /// Absolute, normalized, in-scope links with the index of the rule that handles them.
    pub links: Vec<(Url, usize)>,
    /// The item's fields, in the rule's order, when the rule has a table. `None` values are
    /// fields whose selector or regex matched nothing.
    pub fields: Option<Vec<(Arc<str>, Option<String>)>>,
    /// When the page nests deeper than [`MAX_DEPTH`]: the byte offset where reading stopped.
    pub cut_at: Option<usize>,
}

/// Open elements a page may nest; the rest of a deeper page is not read.
pub const MAX_DEPTH: usize = 4096;

/// The HTML could not be processed.
#[derive(Debug, thiserror::Error)]
#[error("html: {0}")]
pub struct ExtractError(String);

#[derive(Default)]
enum Capture {
    #[default]
    Pending,
    /// Text so far, and how many `<noscript>` elements were open when the element opened.
    Open(String, u32),
    Done(String),
}

#[derive(Default)]
struct State {
    base: Option<String>,
    links: Vec<(String, usize)>,
    fields: Vec<Capture>,
    /// `<noscript>` elements open now (their content is raw text to the parser).
    in_noscript: u32,
}

type Shared = Rc<RefCell<State>>;

fn base_selector() -> &'static Selector {
    static BASE: OnceLock<Selector> = OnceLock::new();
    BASE.get_or_init(|| "base[href]".parse().expect("static selector"))
}

fn noscript_selector() -> &'static Selector {
    static NOSCRIPT: OnceLock<Selector> = OnceLock::new();
    NOSCRIPT.get_or_init(|| "noscript".parse().expect("static selector"))
}

/// Memory one extraction pass may use: the parser's buffers and the stack of open elements
/// (so a page nested 100,000 deep fails cleanly instead of growing without bound).
const MAX_PASS_MEMORY: usize = 16 << 20;

/// [`extract_in`] for a UTF-8 page.
#[cfg(test)]
pub(crate) fn extract(
    rule: &Rule,
    html: &str,
    page: &Url,
    allowed: &HashSet<String>,
) -> Result<Extracted, ExtractError> {
    extract_in(rule, html, encoding_rs::UTF_8, page, allowed)
}

/// Runs a rule over a page decoded from `encoding` (its links' queries are written in it). The
/// content of `<noscript>` elements (raw text to an HTML parser that runs scripts) is parsed as
/// markup in a second pass, since a crawler runs none: its links are followed and its elements
/// can fill fields not filled before it.
pub(crate) fn extract_in(
    rule: &Rule,
    html: &str,
    encoding: &'static encoding_rs::Encoding,
    page: &Url,
    allowed: &HashSet<String>,
) -> Result<Extracted, ExtractError> {
    let state: Shared = Rc::new(RefCell::new(State {
        fields: rule.fields.iter().map(|_| Capture::Pending).collect(),
        ..State::default()
    }));
    // With the end tags HTML implies written out, as a browser reads the page.
    let prepared = prepare(html, MAX_DEPTH);
    let cut_at = prepared.cut_at;
    let html = &html[..cut_at.unwrap_or(html.len())];
    let noscript = Rc::new(RefCell::new(String::new()));
    pass(rule, &prepared.html, &state, has_noscript(html).then_some(&noscript))?;
    let noscript = std::mem::take(&mut *noscript.borrow_mut());
    let noscript = prepare(&noscript, MAX_DEPTH).html;
    if !noscript.is_empty() {
        pass(rule, &noscript, &state, None)?;
    }
    let state =
        Rc::try_unwrap(state).map_err(|_| ExtractError("extraction state still shared".into()))?.into_inner();
    let base = match state.base.as_deref().and_then(|b| page.join(&unescape_attribute(b)).ok()) {
        Some(b) => Cow::Owned(b),
        None => Cow::Borrowed(page),
    };
    let mut links = Vec::with_capacity(state.links.len());
    for (raw, i) in state.links {
        let follow = &rule.follows[i];
        let Some(url) = resolve_link_in(&base, &unescape_attribute(raw.as_str()), encoding) else { continue };
        if !host_allowed(&url, allowed) {
            continue;
        }
        if follow.pattern.as_ref().is_some_and(|p| !p.is_match(url.as_str())) {
            continue;
        }
        links.push((url, follow.rule));
    }

    let fields = rule.table.as_ref().map(|_| {
        rule.fields
            .iter()
            .zip(state.fields)
            .map(|(field, capture)| {
                let value = match (&field.selector, capture) {
                    (Some(_), Capture::Pending) => None,
                    (Some(_), Capture::Open(t, _) | Capture::Done(t)) => Some(if field.attr.is_some() {
                        unescape_attribute(t.trim()).into_owned()
                    } else {
                        collapse_whitespace(&unescape(t.as_str()))
                    }),
                    (None, _) => Some(html.to_owned()),
                };
                let value = match (&field.regex, value) {
                    (Some(re), Some(v)) => {
                        re.captures(&v).and_then(|c| c.get(1)).map(|m| m.as_str().to_owned())
                    }
                    (_, v) => v,
                };
                (field.name.clone(), value)
            })
            .collect()
    });
    Ok(Extracted { links, fields, cut_at })
}

/// One streaming pass of a rule's selectors over `html`, into `state`; with `noscript`, the
/// raw content of `<noscript>` elements is collected there.
fn pass(
    rule: &Rule,
    html: &str,
    state: &Shared,
    noscript: Option<&Rc<RefCell<String>>>,
) -> Result<(), ExtractError> {
    let mut handlers: Vec<(Cow<'_, Selector>, ElementContentHandlers<'_>)> = Vec::new();
    if !rule.follows.is_empty() {
        let st = state.clone();
        handlers.push((
            Cow::Borrowed(base_selector()),
            ElementContentHandlers::default().element(move |el: &mut Element| {
                let mut s = st.borrow_mut();
                if s.base.is_none() {
                    s.base = el.get_attribute("href");
                }
                Ok(())
            }),
        ));
    }
    for (i, follow) in rule.follows.iter().enumerate() {
        let st = state.clone();
        handlers.push((
            Cow::Borrowed(&follow.selector),
            ElementContentHandlers::default().element(move |el: &mut Element| {
                match el.get_attribute(&follow.attr) {
                    Some(v) if v.len() <= MAX_LINK_BYTES => st.borrow_mut().links.push((v, i)),
                    _ => {}
                }
                Ok(())
            }),
        ));
    }
    // Whether `<noscript>` elements are counted in this pass.
    let counting = noscript.is_some();
    for (i, field) in rule.fields.iter().enumerate() {
        let Some(selector) = &field.selector else { continue };
        let st = state.clone();
        let on_element = move |el: &mut Element| {
            let mut s = st.borrow_mut();
            if !matches!(s.fields[i], Capture::Pending) {
                return Ok(());
            }
            if let Some(attr) = &field.attr {
                // The first match that has the attribute (as Scrapy's `::attr()` takes it): a
                // first match without it gave "" where a later one had the value.
                if let Some(v) = el.get_attribute(attr) {
                    let mut value = String::new();
                    push_capped(&mut value, &v, MAX_FIELD_BYTES);
                    s.fields[i] = Capture::Done(value);
                }
            } else if el.can_have_content() && !el.is_self_closing() {
                // A `<noscript>` selected itself keeps its raw text (its own start is counted
                // after this handler).
                let own = counting && el.tag_name().eq_ignore_ascii_case("noscript");
                s.fields[i] = Capture::Open(String::new(), s.in_noscript + u32::from(own));
                let st = st.clone();
                el.on_end_tag(Box::new(move |_: &mut EndTag| {
                    let mut s = st.borrow_mut();
                    if let Capture::Open(text, _) = std::mem::take(&mut s.fields[i]) {
                        s.fields[i] = Capture::Done(text);
                    }
                    Ok(())
                }))?;
            } else {
                s.fields[i] = Capture::Done(String::new());
            }
            Ok(())
        };
        let mut content = ElementContentHandlers::default().element(on_element);
        if field.attr.is_none() {
            let st = state.clone();
            content = content.text(move |t: &mut TextChunk| {
                let mut s = st.borrow_mut();
                let in_noscript = s.in_noscript;
                // The markup of a `<noscript>` inside the element is not its text (it came
                // as raw text: `Great book<img src="c.jpg">`); its text is read as markup
                // in the second pass.
                if let Capture::Open(buf, at) = &mut s.fields[i] {
                    if in_noscript == *at {
                        push_capped(buf, t.as_str(), MAX_FIELD_BYTES);
                    }
                }
                Ok(())
            });
        }
        handlers.push((Cow::Borrowed(selector), content));
    }
    if handlers.is_empty() {
        return Ok(());
    }
    if let Some(out) = noscript {
        let out = out.clone();
        let st = state.clone();
        let opened = move |el: &mut Element| {
            st.borrow_mut().in_noscript += 1;
            let st = st.clone();
            el.on_end_tag(Box::new(move |_: &mut EndTag| {
                st.borrow_mut().in_noscript -= 1;
                Ok(())
            }))?;
            Ok(())
        };
        handlers.push((
            Cow::Borrowed(noscript_selector()),
            ElementContentHandlers::default().element(opened).text(move |t: &mut TextChunk| {
                let mut out = out.borrow_mut();
                push_capped(&mut out, t.as_str(), MAX_NOSCRIPT_BYTES);
                if t.last_in_text_node() {
                    push_capped(&mut out, "\n", MAX_NOSCRIPT_BYTES);
                }
                Ok(())
            }),
        ));
    }
    let settings = Settings {
        element_content_handlers: handlers,
        strict: false,
        memory_settings: MemorySettings {
            max_allowed_memory_usage: MAX_PASS_MEMORY,
            ..MemorySettings::new()
        },
        ..Settings::new()
    };
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    rewriter.write(html.as_bytes()).and_then(|()| rewriter.end()).map_err(|e| ExtractError(e.to_string()))
}

/// Whether a page may hold a `<noscript>` element (tag names in all lower or all upper case;
/// mixed case is not looked for). Saves the extra selector on the pages without one.
fn has_noscript(html: &str) -> bool {
    let b = html.as_bytes();
    memchr::memmem::find(b, b"<noscript").is_some() || memchr::memmem::find(b, b"<NOSCRIPT").is_some()
}

/// Longer link values are not followed (no server takes such a URL).
const MAX_LINK_BYTES: usize = 16 * 1024;

/// `<noscript>` content beyond this many bytes per page is not parsed.
const MAX_NOSCRIPT_BYTES: usize = 1 << 20;

/// Text beyond this many bytes of one field is dropped (a runaway unclosed element).
const MAX_FIELD_BYTES: usize = 1 << 20;

/// Appends as much of `text` as fits in `max` bytes (whole characters).
fn push_capped(buf: &mut String, text: &str, max: usize) {
    buf.push_str(prefix_within(text, max.saturating_sub(buf.len())));
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub(crate) fn prefix_within(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Task, TaskSpec};

    fn task(rules: &str) -> Task {
        let spec: TaskSpec = serde_json::from_str(&format!(
            r#"{{"name":"t","seeds":["http://site/"],"allow_hosts":["site"],"rule":{rules}}}"#
        ))
        .unwrap();
        Task::compile(spec).unwrap()
    }

    fn run(t: &Task, rule: usize, html: &str) -> Extracted {
        let page = Url::parse("http://site/dir/page.html").unwrap();
        extract(&t.0.rules[rule], html, &page, &t.0.allow_hosts).unwrap()
    }

    #[test]
    fn fields_take_the_first_match_text_with_whitespace_collapsed() {
        let t = task(
            r#"[{"name":"b","table":"book","fields":{
                "title":"h1.title",
                "author":"span.author",
                "missing":"p.none",
                "link":{"select":"a.home","attr":"href"},
                "price":{"select":"span.price","regex":"([0-9.]+)"},
                "isbn":{"regex":"ISBN ([0-9-]+)"}}}]"#,
        );
        let html = r#"<html><body>
            <h1 class="title">  The  <em>Rust</em>
               Book &amp; more </h1>
            <h1 class="title">Second</h1>
            <span class="author">A&#233;&nbsp;Z</span>
            <a class="home" href="/?a=1&amp;b=2">home</a>
            <span class="price">£51.77</span>
            <p>ISBN 978-3-16</p></body></html>"#;
        let got = run(&t, 0, html);
        let fields: Vec<(String, Option<String>)> =
            got.fields.unwrap().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).unwrap().1.clone();
        assert_eq!(get("title").as_deref(), Some("The Rust Book & more"));
        assert_eq!(get("author").as_deref(), Some("Aé Z"));
        assert_eq!(get("missing"), None);
        assert_eq!(get("link").as_deref(), Some("/?a=1&b=2"));
        assert_eq!(get("price").as_deref(), Some("51.77"));
        assert_eq!(get("isbn").as_deref(), Some("978-3-16"));
    }

    #[test]
    fn links_are_resolved_scoped_and_filtered() {
        let t = task(
            r#"[{"name":"i","follow":[{"select":"a.x","rule":"d","pattern":"/keep"},{"select":"link.y","rule":"i"}]},
                {"name":"d"}]"#,
        );
        let html = r##"<a class="x" href="keep/1.html#frag">1</a>
            <a class="x" href="/drop/2.html">2</a>
            <a class="x" href="http://elsewhere/keep/3">3</a>
            <a class="x">no href</a>
            <a class="x" href="mailto:x@y">mail</a>
            <link class="y" href="../up.html">"##;
        let got = run(&t, 0, html);
        let links: Vec<(&str, usize)> = got.links.iter().map(|(u, r)| (u.as_str(), *r)).collect();
        assert_eq!(links, [("http://site/dir/keep/1.html", 1), ("http://site/up.html", 0)]);
        assert!(got.fields.is_none());
    }

    #[test]
    fn base_href_changes_resolution() {
        let t = task(r#"[{"name":"i","follow":[{"select":"a","rule":"i"}]}]"#);
        let got = run(&t, 0, r#"<head><base href="/other/"></head><a href="x.html">x</a>"#);
        assert_eq!(got.links[0].0.as_str(), "http://site/other/x.html");
    }

    #[test]
    fn every_named_reference_and_the_numeric_rules() {
        let t =
            task(r#"[{"name":"b","table":"t","fields":{"text":"p","attr":{"select":"a","attr":"href"}}}]"#);
        let got = run(
            &t,
            0,
            r#"<p>&aring; &mu; &oelig; &#150; &#x80; &NotNestedGreaterGreater; &copy=2 &amp;c &bogus;</p>
            <a href="/?a=1&copy=2&amp;b=&lt;">x</a>"#,
        );
        let f = got.fields.unwrap();
        assert_eq!(f[1].1.as_deref(), Some("å μ œ – € \u{2aa2}\u{338} ©=2 &c &bogus;"));
        // In an attribute a name without ';' before '=' is left as written (the HTML rule).
        assert_eq!(f[0].1.as_deref(), Some("/?a=1&copy=2&b=<"));
    }

    #[test]
    fn a_field_skips_the_markup_of_a_noscript_inside_it_and_attrs_take_the_first_match_that_has_one() {
        let t = task(
            r#"[{"name":"b","table":"t","fields":{"d":"div.d","ns":"noscript","pdf":{"select":"a.dl","attr":"href"},
                 "none":{"select":"a.dl","attr":"data-x"},"img":{"select":"img","attr":"src"}}}]"#,
        );
        let html = r#"<div class="d">Great <b>book</b><noscript><img src="c.jpg"> Enable JS</noscript> indeed</div>
            <noscript>Plain</noscript><a class="dl">soon</a><a class="dl" href="/f.pdf">pdf</a>"#;
        let got = run(&t, 0, html);
        let f = got.fields.unwrap();
        let get = |k: &str| f.iter().find(|(n, _)| &**n == k).unwrap().1.clone();
        // Before: `Great book<img src="c.jpg"> Enable JS indeed`, "" (the first a.dl has no href).
        assert_eq!(get("d").as_deref(), Some("Great book indeed"));
        // A noscript selected itself keeps its text; an element inside one is found in it.
        assert_eq!(get("ns").as_deref(), Some("<img src=\"c.jpg\"> Enable JS"));
        assert_eq!(get("pdf").as_deref(), Some("/f.pdf"));
        assert_eq!(get("none"), None, "no match has the attribute");
        assert_eq!(get("img").as_deref(), Some("c.jpg"));
    }

    #[test]
    fn noscript_content_is_markup() {
        let t = task(
            r#"[{"name":"i","table":"t","fields":{"toc":"ol.toc li","title":"h1"},
                 "follow":[{"select":"iframe","attr":"src","rule":"i"},{"select":"a","rule":"i"}]}]"#,
        );
        let html = r#"<h1>Book</h1><script>var x = "<a href='/script'>no</a>";</script>
            <noscript><iframe src="toc.html"></iframe><ol class="toc"><li>Intro &amp; more</li></ol>
            <a href="/ns/1.html">one</a></noscript><a href="/after.html">after</a>"#;
        let got = run(&t, 0, html);
        let links: Vec<&str> = got.links.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(links, ["http://site/after.html", "http://site/dir/toc.html", "http://site/ns/1.html"]);
        let f = got.fields.unwrap();
        assert_eq!(f[0].1.as_deref(), Some("Book"));
        assert_eq!(f[1].1.as_deref(), Some("Intro & more"));
    }

    #[test]
    fn hostile_pages_fail_cleanly_or_are_cut() {
        let t = task(
            r#"[{"name":"i","table":"t","fields":{"a":"div p","b":"span"},"follow":[{"select":"div a","rule":"i"}]}]"#,
        );
        // 100,000 nested elements: read up to the depth limit (links before it kept), fast.
        let deep = format!("<a href='/first'>f</a>{}<a href='/x'>x</a>", "<div>".repeat(100_000));
        let page = Url::parse("http://site/").unwrap();
        let got = extract(&t.0.rules[0], &deep, &page, &t.0.allow_hosts).unwrap();
        let cut = got.cut_at.unwrap();
        assert_eq!(cut, "<a href='/first'>f</a>".len() + 5 * MAX_DEPTH);
        assert!(got.links.is_empty(), "{:?}", got.links);
        let f = |sel: &str| task(&format!(r#"[{{"name":"i","follow":[{{"select":"{sel}","rule":"i"}}]}}]"#));
        let got = extract(&f("a").0.rules[0], &deep, &page, &t.0.allow_hosts).unwrap();
        assert_eq!(got.links.len(), 1);
        // A 50 MB line of text: a field keeps at most MAX_FIELD_BYTES of it.
        let long = format!("<span>{}</span><div><a href='/y'>y</a></div>", "x".repeat(50 << 20));
        let got = extract(&t.0.rules[0], &long, &page, &t.0.allow_hosts).unwrap();
        assert_eq!(got.links.len(), 1);
        let b = got.fields.unwrap()[1].1.clone().unwrap();
        assert_eq!(b.len(), MAX_FIELD_BYTES);
        // A 50 MB link is not followed; the next one is.
        let attr = format!("<div><a href='/{}'>z</a><a href='/ok'>ok</a></div>", "y".repeat(50 << 20));
        let got = extract(&t.0.rules[0], &attr, &page, &t.0.allow_hosts).unwrap();
        assert_eq!(got.links.len(), 1);
        assert_eq!(got.links[0].0.path(), "/ok");
    }

    #[test]
    fn elements_whose_end_tags_are_left_out_end_where_a_browser_ends_them() {
        let t = task(
            r#"[{"name":"i","table":"t",
                "fields":{"first":"li.x","price":"p.price","cell":"td.c"},
                "follow":[{"select":"ul > li > a","rule":"i"},{"select":"tr > td > a.row","rule":"i"}]}]"#,
        );
        let html = "<ul><li class=x>First<li class=x><a href=/2>Second</a><li><a href=/3>3</a></ul>\
                    <div><p class=price>£10<p>Other</div>\
                    <table><tr><td class=c>one<td>two<tr><td><a class=row href=/r2>r2</a></table>";
        let got = run(&t, 0, html);
        let fields: Vec<(String, String)> =
            got.fields.unwrap().into_iter().map(|(k, v)| (k.to_string(), v.unwrap_or_default())).collect();
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // Each value ends at the next item, paragraph or cell (it ran on: "FirstSecond3").
        assert_eq!(fields, [("cell", "one"), ("first", "First"), ("price", "£10")]);
        // Every item is a child of the list, every row's cell of its row (the second item was
        // taken for a child of the first, and its link missed).
        let links: Vec<&str> = got.links.iter().map(|(u, _)| u.path()).collect();
        assert_eq!(links, ["/2", "/3", "/r2"]);
    }

    #[test]
    fn malformed_html_does_not_fail() {
        let t = task(r#"[{"name":"i","table":"t","fields":{"a":"b"},"follow":[{"select":"a","rule":"i"}]}]"#);
        for html in [
            "<b>unclosed <a href=/x>",
            "<<<>>><a href='/y'",
            "\u{0}\u{1}binary\u{fffd}",
            "<select><xmp><script>x</script></select><a href=/z>",
        ] {
            let _ = run(&t, 0, html);
        }
        let got = run(&t, 0, "<b>unclosed <a href=/x>");
        assert_eq!(got.fields.unwrap()[0].1.as_deref(), Some("unclosed"));
    }
}

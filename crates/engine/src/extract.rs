//! Extraction: links to follow and item fields from one HTML page, in a single streaming pass
//! with lol_html (no DOM is built). Pure: a page in, links and fields out.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use lol_html::html_content::{Element, EndTag, TextChunk};
use lol_html::{ElementContentHandlers, HtmlRewriter, Selector, Settings};
use url::Url;

use crate::entities::decode_entities;
use crate::scope::{host_allowed, resolve_link};
use crate::spec::Rule;

/// What one page yielded.
#[derive(Debug, Default, PartialEq)]
pub struct Extracted {
    /// Absolute, normalized, in-scope links with the index of the rule that handles them.
    pub links: Vec<(Url, usize)>,
    /// The item's fields, in the rule's order, when the rule has a table. `None` values are
    /// fields whose selector or regex matched nothing.
    pub fields: Option<Vec<(Arc<str>, Option<String>)>>,
}

/// The HTML could not be processed.
#[derive(Debug, thiserror::Error)]
#[error("html: {0}")]
pub struct ExtractError(String);

#[derive(Default)]
enum Capture {
    #[default]
    Pending,
    Open(String),
    Done(String),
}

#[derive(Default)]
struct State {
    base: Option<String>,
    links: Vec<(String, usize)>,
    fields: Vec<Capture>,
}

type Shared = Rc<RefCell<State>>;

fn base_selector() -> &'static Selector {
    static BASE: OnceLock<Selector> = OnceLock::new();
    BASE.get_or_init(|| "base[href]".parse().expect("static selector"))
}

/// Runs a rule over a decoded page.
pub(crate) fn extract(
    rule: &Rule,
    html: &str,
    page: &Url,
    allowed: &HashSet<String>,
) -> Result<Extracted, ExtractError> {
    let state: Shared = Rc::new(RefCell::new(State {
        fields: rule.fields.iter().map(|_| Capture::Pending).collect(),
        ..State::default()
    }));
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
                if let Some(v) = el.get_attribute(&follow.attr) {
                    st.borrow_mut().links.push((v, i));
                }
                Ok(())
            }),
        ));
    }
    for (i, field) in rule.fields.iter().enumerate() {
        let Some(selector) = &field.selector else { continue };
        let st = state.clone();
        let on_element = move |el: &mut Element| {
            let mut s = st.borrow_mut();
            if !matches!(s.fields[i], Capture::Pending) {
                return Ok(());
            }
            if let Some(attr) = &field.attr {
                s.fields[i] = Capture::Done(el.get_attribute(attr).unwrap_or_default());
            } else if el.can_have_content() && !el.is_self_closing() {
                s.fields[i] = Capture::Open(String::new());
                let st = st.clone();
                el.on_end_tag(Box::new(move |_: &mut EndTag| {
                    let mut s = st.borrow_mut();
                    if let Capture::Open(text) = std::mem::take(&mut s.fields[i]) {
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
                if let Capture::Open(buf) = &mut st.borrow_mut().fields[i] {
                    if buf.len() < MAX_FIELD_BYTES {
                        buf.push_str(t.as_str());
                    }
                }
                Ok(())
            });
        }
        handlers.push((Cow::Borrowed(selector), content));
    }

    if !handlers.is_empty() {
        let settings = Settings { element_content_handlers: handlers, strict: false, ..Settings::new() };
        let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
        rewriter
            .write(html.as_bytes())
            .and_then(|()| rewriter.end())
            .map_err(|e| ExtractError(e.to_string()))?;
    }

    let state =
        Rc::try_unwrap(state).map_err(|_| ExtractError("extraction state still shared".into()))?.into_inner();
    let base = match state.base.as_deref().and_then(|b| page.join(&decode_entities(b)).ok()) {
        Some(b) => Cow::Owned(b),
        None => Cow::Borrowed(page),
    };
    let mut links = Vec::with_capacity(state.links.len());
    for (raw, i) in state.links {
        let follow = &rule.follows[i];
        let Some(url) = resolve_link(&base, &decode_entities(&raw)) else { continue };
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
                    (Some(_), Capture::Open(t) | Capture::Done(t)) => Some(if field.attr.is_some() {
                        decode_entities(t.trim()).into_owned()
                    } else {
                        collapse_whitespace(&decode_entities(&t))
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
    Ok(Extracted { links, fields })
}

/// Text beyond this many bytes of one field is dropped (a runaway unclosed element).
const MAX_FIELD_BYTES: usize = 1 << 20;

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

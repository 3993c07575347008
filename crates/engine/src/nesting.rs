//! The elements a page opens and closes, as the extractor's parser should see them.
//!
//! lol_html keeps a stack of open elements and closes an element only at a matching end tag,
//! never implicitly. Browsers (and lxml, under Scrapy) close many by the rules of HTML: a
//! `<li>` ends the `<li>` before it, a `<div>` ends an open `<p>`, a `<td>` the cell before
//! it. Without those, `<li>One<li>Two` reads as one item holding both, `ul > li` misses every
//! item after the first, and a long list of unclosed items nests thousands deep. This scan
//! mirrors the parser's stack cheaply (one `memchr` pass, no allocation per tag), writes out
//! the end tags HTML implies where a page leaves them out (a copy of the page only when it
//! does), and says where a page first goes deeper than a limit, so the extractor stops there
//! (each descendant selector walks that stack for every element: a page nested 100,000 deep
//! costs billions of steps).

use std::borrow::Cow;
use std::sync::OnceLock;

/// What the implied-end rules need to know of an element.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Kind {
    Li,
    /// `dd`, `dt`.
    Definition,
    P,
    /// `h1`-`h6`.
    Heading,
    /// `td`, `th`.
    Cell,
    Tr,
    /// `tbody`, `thead`, `tfoot`.
    Section,
    Option,
    Optgroup,
    /// Another element of HTML's "special" category: it ends the search for an `li` or a
    /// `dd`/`dt` to close (except `address`, `div` and `p`).
    Special,
    /// `address`, `div`: special, but searched through.
    SpecialPassable,
    Other,
}

/// Open elements per [`Kind`]: the searches for an element to close skip a page without one.
type Counts = [usize; Kind::Other as usize + 1];

/// `Kind` and flags of a start tag's (lower-cased) name.
#[derive(Clone, Copy)]
struct Class {
    kind: Kind,
    /// Its start tag closes an open `p` (in button scope).
    closes_p: bool,
    /// It bounds button scope (a `p` below it is not closed by a start tag above it).
    button_scope: bool,
    /// It bounds table scope (`html`, `table`, `template`).
    table_scope: bool,
    /// It never has content (`br`, `img`, ...).
    void: bool,
    /// Its content is text up to its end tag, to a parser that runs scripts (`script`,
    /// `style`, `title`, `noscript`, ...).
    raw: bool,
    /// Its start tag inside svg or math content ends that content (`<svg><p>` is a `p` after
    /// the svg).
    breakout: bool,
}

/// Every name [`class`] knows.
const NAMES: &[&[u8]] = &[
    b"li",
    b"dd",
    b"dt",
    b"p",
    b"h1",
    b"h2",
    b"h3",
    b"h4",
    b"h5",
    b"h6",
    b"td",
    b"th",
    b"tr",
    b"tbody",
    b"thead",
    b"tfoot",
    b"option",
    b"optgroup",
    b"address",
    b"div",
    b"article",
    b"aside",
    b"blockquote",
    b"center",
    b"details",
    b"dialog",
    b"dir",
    b"dl",
    b"fieldset",
    b"figcaption",
    b"figure",
    b"footer",
    b"header",
    b"hgroup",
    b"main",
    b"menu",
    b"nav",
    b"ol",
    b"search",
    b"section",
    b"summary",
    b"ul",
    b"pre",
    b"listing",
    b"form",
    b"plaintext",
    b"table",
    b"html",
    b"template",
    b"applet",
    b"caption",
    b"marquee",
    b"object",
    b"button",
    b"body",
    b"colgroup",
    b"frameset",
    b"head",
    b"select",
    b"hr",
    b"area",
    b"base",
    b"br",
    b"col",
    b"embed",
    b"img",
    b"input",
    b"link",
    b"meta",
    b"source",
    b"track",
    b"wbr",
    b"param",
    b"keygen",
    b"basefont",
    b"bgsound",
    b"xmp",
    b"script",
    b"style",
    b"textarea",
    b"title",
    b"iframe",
    b"noembed",
    b"noframes",
    b"noscript",
    b"b",
    b"big",
    b"code",
    b"em",
    b"i",
    b"nobr",
    b"ruby",
    b"s",
    b"small",
    b"span",
    b"strong",
    b"strike",
    b"sub",
    b"sup",
    b"tt",
    b"u",
    b"var",
];

const SVG: (usize, u64) = (3, u64::from_le_bytes(*b"svg\0\0\0\0\0"));
const MATH: (usize, u64) = (4, u64::from_le_bytes(*b"math\0\0\0\0"));
const P: (usize, u64) = (1, u64::from_le_bytes(*b"p\0\0\0\0\0\0\0"));
const BR: (usize, u64) = (2, u64::from_le_bytes(*b"br\0\0\0\0\0\0"));

/// The class of the name whose end-tag key is `key`, from a small hash table of [`NAMES`] (one
/// match over eighty byte strings per tag, or a binary search, cost a few percent of a
/// crawl's CPU). Names past 8 bytes are told apart by their first 8 and their length, which is
/// exact for these.
fn class_of(key: (usize, u64)) -> Class {
    const SLOTS: usize = 256;
    fn slot(key: (usize, u64)) -> usize {
        ((key.1 ^ key.0 as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize
    }
    type Slot = Option<((usize, u64), Class)>;
    static TABLE: OnceLock<Vec<Slot>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = vec![None; SLOTS];
        for n in NAMES {
            let key = (n.len(), key_of(n));
            let mut i = slot(key);
            while t[i].is_some() {
                i = (i + 1) % SLOTS;
            }
            t[i] = Some((key, class(n)));
        }
        t
    });
    let mut i = slot(key);
    loop {
        match &table[i] {
            Some((k, c)) if *k == key => return *c,
            Some(_) => i = (i + 1) % SLOTS,
            None => return OTHER,
        }
    }
}

/// The class of a name [`class`] does not know.
const OTHER: Class = Class {
    kind: Kind::Other,
    closes_p: false,
    button_scope: false,
    table_scope: false,
    void: false,
    raw: false,
    breakout: false,
};

fn class(name: &[u8]) -> Class {
    let plain = |kind, closes_p| Class { kind, closes_p, ..OTHER };
    let breakout = matches!(
        name,
        b"b" | b"big"
            | b"blockquote"
            | b"body"
            | b"br"
            | b"center"
            | b"code"
            | b"dd"
            | b"div"
            | b"dl"
            | b"dt"
            | b"em"
            | b"embed"
            | b"h1"
            | b"h2"
            | b"h3"
            | b"h4"
            | b"h5"
            | b"h6"
            | b"head"
            | b"hr"
            | b"i"
            | b"img"
            | b"li"
            | b"listing"
            | b"menu"
            | b"meta"
            | b"nobr"
            | b"ol"
            | b"p"
            | b"pre"
            | b"ruby"
            | b"s"
            | b"small"
            | b"span"
            | b"strong"
            | b"strike"
            | b"sub"
            | b"sup"
            | b"table"
            | b"tt"
            | b"u"
            | b"ul"
            | b"var"
    );
    let class = match name {
        b"li" => plain(Kind::Li, true),
        b"dd" | b"dt" => plain(Kind::Definition, true),
        b"p" => plain(Kind::P, true),
        b"h1" | b"h2" | b"h3" | b"h4" | b"h5" | b"h6" => plain(Kind::Heading, true),
        b"td" | b"th" => Class { button_scope: true, ..plain(Kind::Cell, false) },
        b"tr" => plain(Kind::Tr, false),
        b"tbody" | b"thead" | b"tfoot" => plain(Kind::Section, false),
        b"option" => plain(Kind::Option, false),
        b"optgroup" => plain(Kind::Optgroup, false),
        b"address" | b"div" => plain(Kind::SpecialPassable, true),
        b"article" | b"aside" | b"blockquote" | b"center" | b"details" | b"dialog" | b"dir" | b"dl"
        | b"fieldset" | b"figcaption" | b"figure" | b"footer" | b"header" | b"hgroup" | b"main" | b"menu"
        | b"nav" | b"ol" | b"search" | b"section" | b"summary" | b"ul" | b"pre" | b"listing" | b"form"
        | b"plaintext" => plain(Kind::Special, true),
        b"table" => Class { button_scope: true, table_scope: true, ..plain(Kind::Special, true) },
        b"html" | b"template" => {
            Class { button_scope: true, table_scope: true, ..plain(Kind::Special, false) }
        }
        b"applet" | b"caption" | b"marquee" | b"object" | b"button" => {
            Class { button_scope: true, ..plain(Kind::Special, false) }
        }
        b"body" | b"colgroup" | b"frameset" | b"head" | b"select" => plain(Kind::Special, false),
        b"hr" => Class { void: true, ..plain(Kind::Special, true) },
        b"area" | b"base" | b"br" | b"col" | b"embed" | b"img" | b"input" | b"link" | b"meta" | b"source"
        | b"track" | b"wbr" | b"param" | b"keygen" | b"basefont" | b"bgsound" => {
            Class { void: true, ..plain(Kind::Other, false) }
        }
        b"xmp" => Class { raw: true, ..plain(Kind::Special, true) },
        b"script" | b"style" | b"textarea" | b"title" | b"iframe" | b"noembed" | b"noframes"
        | b"noscript" => Class { raw: true, ..plain(Kind::Special, false) },
        _ => OTHER,
    };
    Class { breakout, ..class }
}

/// Where an element is: in HTML, in svg or math content, or an svg or math element whose
/// content is HTML again (svg's `foreignObject`, `desc`, `title`; math's `mi`, `mo`, `mn`,
/// `ms`, `mtext`, and `annotation-xml` with an HTML `encoding`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ns {
    Html,
    Svg,
    Math,
    Integration,
}

impl Ns {
    fn foreign(self) -> bool {
        matches!(self, Ns::Svg | Ns::Math)
    }
}

/// An open element: where its name is in the page, its end-tag key, what it is, and where.
struct Open {
    name_at: usize,
    key: (usize, u64),
    kind: Kind,
    button_scope: bool,
    table_scope: bool,
    ns: Ns,
}

/// Whether an element of namespace `ns` named `name` has HTML content again.
fn integration_point(ns: Ns, name: &[u8], tag: &Tag) -> bool {
    let any = |names: &[&[u8]]| names.iter().any(|n| name.eq_ignore_ascii_case(n));
    match ns {
        Ns::Svg => any(&[b"foreignobject", b"desc", b"title"]),
        Ns::Math => {
            any(&[b"mi", b"mo", b"mn", b"ms", b"mtext"]) || (any(&[b"annotation-xml"]) && tag.html_encoding)
        }
        _ => false,
    }
}

/// A page ready for the extractor's parser: with the end tags HTML implies written out, and cut
/// where it first nests too deep.
pub struct Prepared<'a> {
    pub html: Cow<'a, str>,
    /// The byte offset in the page (as given) of the start tag that first opened element
    /// number `max + 1` on the stack of open elements, if the page gets that deep.
    pub cut_at: Option<usize>,
}

/// Scans `html` as the parser will read it; see [`Prepared`].
pub fn prepare(html: &str, max: usize) -> Prepared<'_> {
    let bytes = html.as_bytes();
    let mut stack: Vec<Open> = Vec::new();
    let mut counts: Counts = [0; Kind::Other as usize + 1];
    // The page with the implied end tags, once one is needed, and how much of the page is in it.
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut cut_at = None;
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'<', &bytes[i..]) {
        let at = i + off;
        let rest = &bytes[at + 1..];
        if rest.starts_with(b"!--") {
            // `<!-->` and `<!--->` are whole (empty) comments to an HTML parser.
            i = if rest[3..].starts_with(b">") {
                at + 5
            } else if rest[3..].starts_with(b"->") {
                at + 6
            } else {
                find(bytes, at + 4, b"-->").map_or(bytes.len(), |e| e + 3)
            };
            continue;
        }
        if rest.first().is_some_and(|c| *c == b'!' || *c == b'?') {
            i = memchr::memchr(b'>', rest).map_or(bytes.len(), |e| at + 1 + e + 1);
            continue;
        }
        let closing = rest.first() == Some(&b'/');
        let name_at = at + 1 + usize::from(closing);
        if !bytes.get(name_at).is_some_and(u8::is_ascii_alphabetic) {
            i = at + 1;
            continue;
        }
        // A name runs to a space, `/` or `>`, as the tokenizer reads it (`x_1`, `svg:a`).
        let len = bytes[name_at..]
            .iter()
            .take_while(|c| !c.is_ascii_whitespace() && !matches!(c, b'/' | b'>'))
            .count();
        let name = &bytes[name_at..name_at + len];
        let tag = scan_tag(bytes, name_at + len);
        let end = tag.end;
        let key = (len, key_of(name));
        let in_foreign = stack.last().is_some_and(|o| o.ns.foreign());
        if closing {
            // The same name (past its first 8 bytes too: `</custom-a2>` does not close a
            // `custom-a1`).
            let same =
                |o: &Open| o.key == key && bytes[o.name_at..o.name_at + len].eq_ignore_ascii_case(name);
            if in_foreign && (key == P || key == BR) {
                // `</p>` and `</br>` end svg or math content too.
                let from = stack.iter().rposition(|o| !o.ns.foreign()).map_or(0, |p| p + 1);
                write_end_tags(&mut out, &mut copied, html, at, &stack[from..]);
                close(&mut stack, from, &mut counts);
            }
            let mut at_end = stack.iter().rposition(same);
            let in_foreign = stack.last().is_some_and(|o| o.ns.foreign());
            if at_end.is_none() && !in_foreign && class_of(key).kind == Kind::Heading {
                // `</h3>` ends whichever heading is open (`<h2>Title</h3>`); the parser would
                // only end an `h3`, so the heading's own end tag is written before it.
                at_end = stack
                    .iter()
                    .rposition(|o| o.kind == Kind::Heading)
                    .filter(|&p| stack[p + 1..].iter().all(|o| !o.button_scope));
                if let Some(p) = at_end {
                    write_end_tags(&mut out, &mut copied, html, at, &stack[p..]);
                }
            }
            if let Some(p) = at_end {
                close(&mut stack, p, &mut counts);
            }
            i = end;
            continue;
        }
        let self_closing = tag.self_closing;
        let mut c = class_of(key);
        let mut in_foreign = in_foreign;
        if in_foreign && c.breakout {
            // `<svg><p>`: the svg content ends, the p is HTML after it.
            let from = stack.iter().rposition(|o| !o.ns.foreign()).map_or(0, |p| p + 1);
            write_end_tags(&mut out, &mut copied, html, at, &stack[from..]);
            close(&mut stack, from, &mut counts);
            in_foreign = false;
        }
        // In svg or math content an element is of the content's namespace (a `<math>` in svg
        // is an svg element); in HTML `svg` and `math` start such content.
        let ns = match stack.last().map(|o| o.ns).filter(|_| in_foreign) {
            Some(parent) if integration_point(parent, name, &tag) => Ns::Integration,
            Some(parent) => parent,
            None if key == SVG => Ns::Svg,
            None if key == MATH => Ns::Math,
            None => Ns::Html,
        };
        let starts_foreign = !in_foreign && ns.foreign();
        if in_foreign {
            // A foreign element: no HTML rule applies to it (an integration point bounds a
            // search, as HTML's special elements do).
            c = match ns {
                Ns::Integration => Class { kind: Kind::Special, button_scope: true, ..OTHER },
                _ => OTHER,
            };
        }
        if !in_foreign && c.raw {
            // Skip the text up to the matching end tag.
            i = end_tag(bytes, end, name).unwrap_or(bytes.len());
            continue;
        }
        if !in_foreign {
            let close_from = implied_end(&stack, &counts, &c);
            if close_from < stack.len() {
                write_end_tags(&mut out, &mut copied, html, at, &stack[close_from..]);
                close(&mut stack, close_from, &mut counts);
            }
        }
        if (in_foreign || starts_foreign) && self_closing {
            // A foreign element closes itself.
        } else if !c.void {
            stack.push(Open {
                name_at,
                key,
                kind: c.kind,
                button_scope: c.button_scope,
                table_scope: c.table_scope,
                ns,
            });
            counts[c.kind as usize] += 1;
            if stack.len() > max {
                cut_at = Some(at);
                break;
            }
        }
        i = end;
    }
    let upto = cut_at.unwrap_or(html.len());
    let html = match out {
        Some(mut out) => {
            out.push_str(&html[copied..upto]);
            Cow::Owned(out)
        }
        None => Cow::Borrowed(&html[..upto]),
    };
    Prepared { html, cut_at }
}

/// Writes the end tags of `open` (innermost first) into `out` at offset `at` of the page,
/// `out` holding the page up to `copied` (a copy of it begun now if none was).
fn write_end_tags(out: &mut Option<String>, copied: &mut usize, html: &str, at: usize, open: &[Open]) {
    let out = out.get_or_insert_with(|| String::with_capacity(html.len() + 64));
    out.push_str(&html[*copied..at]);
    for o in open.iter().rev() {
        out.push_str("</");
        out.push_str(&html[o.name_at..o.name_at + o.key.0]);
        out.push('>');
    }
    *copied = at;
}

/// Closes the elements of `stack` from `from` up.
fn close(stack: &mut Vec<Open>, from: usize, counts: &mut Counts) {
    for o in &stack[from..] {
        counts[o.kind as usize] -= 1;
    }
    stack.truncate(from);
}

/// Where on `stack` the elements a start tag of class `c` closes begin (`stack.len()` when
/// it closes none), by HTML's tree-building rules for the body: an `li` closes the `li` it
/// meets first (searching down through elements that are not special, and `address`, `div`
/// and `p`), `dd`/`dt` likewise; a block (`div`, `ul`, `h2`, ...) closes a `p` in button scope,
/// a heading a heading that is the current element; a cell closes a cell in table scope, a
/// row a cell and a row, a table section those and a section; an `option` an `option` that is
/// the current element, an `optgroup` also an `optgroup`. Everything above a closed element
/// closes with it.
fn implied_end(stack: &[Open], counts: &Counts, c: &Class) -> usize {
    let open = |k: Kind| counts[k as usize] > 0;
    let mut from = stack.len();
    let search = |stack: &[Open], target: &dyn Fn(Kind) -> bool, stop: &dyn Fn(&Open) -> bool| {
        for (p, o) in stack.iter().enumerate().rev() {
            if target(o.kind) {
                return Some(p);
            }
            if stop(o) {
                return None;
            }
        }
        None
    };
    // The search for an `li` or a `dd`/`dt` ends at a special element other than `address`,
    // `div` and `p` (`li`, `dd`, `dt`, headings and table parts are special too).
    let list_stop = |o: &Open| {
        !matches!(o.kind, Kind::Other | Kind::P | Kind::SpecialPassable | Kind::Option | Kind::Optgroup)
    };
    match c.kind {
        Kind::Li if open(Kind::Li) => {
            if let Some(p) = search(stack, &|k| k == Kind::Li, &list_stop) {
                from = p;
            }
        }
        Kind::Definition if open(Kind::Definition) => {
            if let Some(p) = search(stack, &|k| k == Kind::Definition, &list_stop) {
                from = p;
            }
        }
        Kind::Cell | Kind::Tr | Kind::Section
            if open(Kind::Cell) || open(Kind::Tr) || open(Kind::Section) =>
        {
            let targets = |k: Kind| match c.kind {
                Kind::Cell => k == Kind::Cell,
                Kind::Tr => matches!(k, Kind::Cell | Kind::Tr),
                _ => matches!(k, Kind::Cell | Kind::Tr | Kind::Section),
            };
            // The lowest of them in table scope: everything from there up closes.
            for (p, o) in stack.iter().enumerate().rev() {
                if o.table_scope {
                    break;
                }
                if targets(o.kind) {
                    from = p;
                }
            }
        }
        Kind::Option | Kind::Optgroup => {
            let mut top = stack.len();
            if top > 0 && stack[top - 1].kind == Kind::Option {
                top -= 1;
            }
            if c.kind == Kind::Optgroup && top > 0 && stack[top - 1].kind == Kind::Optgroup {
                top -= 1;
            }
            from = top;
        }
        _ => {}
    }
    if c.closes_p && open(Kind::P) {
        if let Some(p) = search(&stack[..from], &|k| k == Kind::P, &|o| o.button_scope) {
            from = p;
        }
    }
    // A heading ends a heading that is the current element (once a `p` it held is closed).
    if c.kind == Kind::Heading && from > 0 && stack[from - 1].kind == Kind::Heading {
        from -= 1;
    }
    from
}

fn key_of(name: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    for (d, s) in k.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    u64::from_le_bytes(k)
}

/// A tag's end, as the tokenizer reads its attributes (from just past its name).
struct Tag {
    /// The offset just past its `>` (the page's length when it has none).
    end: usize,
    /// It ends with `/>` (a `/` in an unquoted value, `<g a=b/>`, does not count).
    self_closing: bool,
    /// It has `encoding="text/html"` or `"application/xhtml+xml"` (which makes a math
    /// `annotation-xml` hold HTML).
    html_encoding: bool,
}

/// Reads a tag's attributes as the tokenizer does: a name is its first byte (`=` included)
/// and what follows up to a space, `/`, `>` or `=`; a value after `=` is quoted only when it
/// starts with a quote (which may hold `>`), else it runs to a space or `>` (so a stray quote,
/// `<div class="x"">` or `<img alt=Joe's>`, is text).
fn scan_tag(html: &[u8], from: usize) -> Tag {
    let n = html.len();
    let space = |b: u8| matches!(b, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ');
    let mut tag = Tag { end: n, self_closing: false, html_encoding: false };
    let mut i = from;
    loop {
        while i < n && space(html[i]) {
            i += 1;
        }
        match html.get(i) {
            None => return tag,
            Some(b'>') => {
                tag.end = i + 1;
                return tag;
            }
            Some(b'/') if html.get(i + 1) == Some(&b'>') => {
                (tag.end, tag.self_closing) = (i + 2, true);
                return tag;
            }
            Some(b'/') => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let name_at = i;
        i += 1;
        while i < n && !space(html[i]) && !matches!(html[i], b'/' | b'>' | b'=') {
            i += 1;
        }
        let name = &html[name_at..i];
        while i < n && space(html[i]) {
            i += 1;
        }
        if html.get(i) != Some(&b'=') {
            continue;
        }
        i += 1;
        while i < n && space(html[i]) {
            i += 1;
        }
        let value = match html.get(i) {
            Some(&quote @ (b'"' | b'\'')) => match memchr::memchr(quote, &html[i + 1..]) {
                Some(close) => {
                    let value = i + 1..i + 1 + close;
                    i = value.end + 1;
                    value
                }
                None => return tag,
            },
            _ => {
                let at = i;
                while i < n && !space(html[i]) && html[i] != b'>' {
                    i += 1;
                }
                at..i
            }
        };
        if name.eq_ignore_ascii_case(b"encoding") {
            let v = &html[value];
            tag.html_encoding =
                v.eq_ignore_ascii_case(b"text/html") || v.eq_ignore_ascii_case(b"application/xhtml+xml");
        }
    }
}

/// The offset just past `</name ...>` at or after `from`, case-insensitively.
fn end_tag(html: &[u8], from: usize, name: &[u8]) -> Option<usize> {
    let mut i = from;
    while let Some(off) = find(html, i, b"</") {
        let n = off + 2;
        if html.len() >= n + name.len() && html[n..n + name.len()].eq_ignore_ascii_case(name) {
            return Some(scan_tag(html, n + name.len()).end);
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
        let deep = |n: usize| format!("<html><body>{}<a href=x>y</a>{}", "<div>".repeat(n), " ".repeat(64));
        // html, body, the divs and the a.
        assert_eq!(prepare(&deep(9), 12).cut_at, None);
        let page = deep(10);
        let at = prepare(&page, 12).cut_at.unwrap();
        assert_eq!(&page[at..at + 15], "<a href=x>y</a>");
        // Closed elements, void elements, comments, doctypes and raw text do not count.
        let flat = "<!DOCTYPE html><p>a</p><p>b</p><br><img src='>'><!-- <div><div><div> -->\
                    <script>if (a<b) document.write('<div><div><div>')</script><DIV></div>";
        assert_eq!(prepare(flat, 1).cut_at, None);
        // An end tag closes everything opened inside it, as in the parser.
        let nested = "<div><span><b><i></div><div><span>";
        assert_eq!(prepare(nested, 4).cut_at, None);
        assert_eq!(prepare(nested, 3).cut_at, Some(nested.find("<i>").unwrap()));
        // A paragraph ends at the next one, as in a browser: unclosed ones do not nest.
        assert_eq!(prepare("<p>a<p>b<p>c", 2).cut_at, None);
        // Empty comments end at once; in svg, `<x/>` closes itself and <title> is markup.
        let comment = format!("<!--><p>a</p>{}", "<div>".repeat(3));
        assert!(prepare(&comment, 2).cut_at.is_some());
        let comment = format!("<!---><p>a</p>{}", "<div>".repeat(3));
        assert!(prepare(&comment, 2).cut_at.is_some());
        let svg = format!("<svg>{}</svg><div><div>", "<path d='M0 0'/>".repeat(50));
        assert_eq!(prepare(&svg, 3).cut_at, None);
        let svg = format!("<svg><title>{}", "<g>".repeat(10));
        assert!(prepare(&svg, 5).cut_at.is_some());
        // End tags match whole names, past their first 8 bytes; a stray quote does not hide
        // the tags after it; basefont and bgsound are void, as for the parser.
        assert!(prepare(&"<custom-a1></custom-a2>".repeat(20), 10).cut_at.is_some());
        // Where the mirror and the parser could part, each a way past the cut before: names
        // run to a space, `/` or `>`; a `/` in an unquoted value does not close a tag; a quote
        // opens a value only at its start; `</p>` ends svg content; an integration point is one
        // only in its own namespace (and annotation-xml only with an HTML encoding).
        let deep = |page: String| prepare(&page, 10).cut_at.is_some();
        assert!(deep("<x_1></x_2>".repeat(20)));
        assert!(deep(format!("<svg>{}", "<g a=b/>".repeat(20))));
        assert!(deep(format!("<a href=?q='>{}", "<div>".repeat(20))));
        assert!(deep(format!("<div =\">{}", "<div>".repeat(20))));
        assert!(deep(format!("<svg></p>{}", "<x/>".repeat(20))));
        assert!(deep(format!("<svg><mi><textarea>{}", "<x>".repeat(20))));
        assert!(deep(format!("<math><annotation-xml encoding='text/html'>{}", "<x/>".repeat(20))));
        assert!(!deep(format!("<math><annotation-xml>{}</annotation-xml></math>", "<x/>".repeat(20))));
        assert!(!deep(format!("<svg>{}</svg>", "<g a='b'/>".repeat(20))));
        // After a breakout, `<div/>` opens a div again.
        assert!(prepare(&format!("<svg><p>{}", "<div/>".repeat(20)), 10).cut_at.is_some());
        assert!(prepare(&format!("<a x=y'>{}", "<div>".repeat(20)), 10).cut_at.is_some());
        assert_eq!(prepare(&"<bgsound><basefont>".repeat(20), 5).cut_at, None);
        // Outside foreign content `<div/>` opens a div, as for the parser.
        assert!(prepare("<div/><div/><div/><div/>", 3).cut_at.is_some());
        // Junk does not panic.
        for junk in
            ["<", "</", "<a", "<a '", "<!--", "<script>", "<1>", "< div>", "<ä>", "<li><li", "<p><div"]
        {
            let _ = prepare(junk, 0).cut_at;
            let _ = prepare(junk, 10).html;
        }
    }

    #[test]
    fn every_known_name_has_its_own_key_and_class() {
        let mut keys: Vec<_> = NAMES.iter().map(|n| (n.len(), key_of(n))).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), NAMES.len(), "two names share a key");
        for n in NAMES {
            let c = class_of((n.len(), key_of(n)));
            let known = c.kind != Kind::Other || c.void || c.raw || c.breakout;
            assert!(known, "{} is in NAMES but class() does not know it", String::from_utf8_lossy(n));
        }
        assert!(class_of((3, key_of(b"DIV"))).kind == Kind::SpecialPassable);
        assert!(class_of((4, key_of(b"span"))).kind == Kind::Other);
    }

    /// The page as the extractor's parser gets it.
    fn written(html: &str) -> String {
        prepare(html, 100).html.into_owned()
    }

    #[test]
    fn end_tags_html_implies_are_written_out() {
        // Nothing to add: the page itself, not a copy.
        let closed = "<ul><li>a</li><li>b</li></ul><p>x</p><div>y</div>";
        assert!(matches!(prepare(closed, 100).html, Cow::Borrowed(_)));
        // List items, and what is open inside them.
        assert_eq!(written("<ul><li>a<li><b>b<LI>c</ul>"), "<ul><li>a</li><li><b>b</b></li><LI>c</ul>");
        // A nested list's items are its own; a div is searched through.
        assert_eq!(
            written("<ul><li>a<ul><li>b<li>c</ul><li>d</ul>"),
            "<ul><li>a<ul><li>b</li><li>c</ul></li><li>d</ul>"
        );
        assert_eq!(written("<ul><li><div>a<li>b</ul>"), "<ul><li><div>a</div></li><li>b</ul>");
        // Definitions.
        assert_eq!(written("<dl><dt>t<dd>d<dt>u</dl>"), "<dl><dt>t</dt><dd>d</dd><dt>u</dl>");
        // Paragraphs end at a block, a list, a heading or another paragraph; not inside a
        // button or a cell (button scope), nor at an inline element.
        assert_eq!(written("<p>a<p>b<div>c</div>"), "<p>a</p><p>b</p><div>c</div>");
        assert_eq!(written("<p>a<span>b<ul><li>c</ul>"), "<p>a<span>b</span></p><ul><li>c</ul>");
        assert_eq!(written("<p>a<table><tr><td><div>b"), "<p>a</p><table><tr><td><div>b");
        assert_eq!(written("<p>a<button><div>b</div></button>"), "<p>a<button><div>b</div></button>");
        assert_eq!(written("<h1>a<h2>b</h2>"), "<h1>a</h1><h2>b</h2>");
        // Table cells and rows, in their own table only.
        assert_eq!(
            written("<table><tr><td>1<td>2<tr><th>3<tbody><tr><td>4</table>"),
            "<table><tr><td>1</td><td>2</td></tr><tr><th>3</th></tr><tbody><tr><td>4</table>"
        );
        assert_eq!(
            written("<table><tr><td><table><tr><td>in<td>in2</table><td>out</table>"),
            "<table><tr><td><table><tr><td>in</td><td>in2</table></td><td>out</table>"
        );
        // Options.
        assert_eq!(
            written("<select><option>a<option>b<optgroup><option>c<optgroup>d</select>"),
            "<select><option>a</option><option>b</option><optgroup><option>c</option></optgroup><optgroup>d</select>"
        );
        // Not in svg, nor in raw text or comments.
        assert_eq!(written("<svg><path d=x></svg><p>a"), "<svg><path d=x></svg><p>a");
        // A breakout tag ends svg content (the ps were inside the svg, one in the other).
        assert_eq!(written("<svg><g><p>a<p>b</svg>"), "<svg><g></g></svg><p>a</p><p>b</svg>");
        // In an integration point the content is HTML, and the svg stays open around it.
        assert_eq!(
            written("<svg><foreignObject><p>a<div>b</div></foreignObject></svg>"),
            "<svg><foreignObject><p>a</p><div>b</div></foreignObject></svg>"
        );
        assert_eq!(
            written("<script>'<li>a<li>'</script><!-- <p><p> -->"),
            "<script>'<li>a<li>'</script><!-- <p><p> -->"
        );
        // A heading ends the heading it is in, after the paragraph it held; a heading's end
        // tag of another level ends it too.
        assert_eq!(written("<h1><p>a<h2>b</h2>"), "<h1><p>a</p></h1><h2>b</h2>");
        assert_eq!(written("<h2>Title</h3><p>x"), "<h2>Title</h2></h3><p>x");
        assert_eq!(written("<div><h2>T</div><p>x"), "<div><h2>T</div><p>x");
        // Stray quotes are text: the tags after them are read (the items here were not).
        assert_eq!(
            written("<img alt=Joe's><div class=\"x\"\"><ul><li>a<li>b</ul>"),
            "<img alt=Joe's><div class=\"x\"\"><ul><li>a</li><li>b</ul>"
        );
        assert_eq!(
            written("<a title='x>y' href=\"/q?a=b\">l<li>m<li>n"),
            "<a title='x>y' href=\"/q?a=b\">l<li>m</li><li>n"
        );
        // A thousand unclosed items are a thousand siblings, not a thousand levels.
        let items = format!("<ul>{}</ul>", "<li>x".repeat(1000));
        assert_eq!(prepare(&items, 10).cut_at, None);
    }
}

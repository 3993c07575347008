//! The robots.txt case list: the examples of RFC 9309 and the cases of Google's reference
//! parser test suite (the RFC's "ID_" tests), re-expressed as `(robots.txt, agent, path,
//! allowed)` rows, plus our own for the cap, `Crawl-delay` and `Sitemap:`.

use super::*;

const UA: &str = "crawler/0.1 (+https://example.invalid/bot)";

/// `(label, robots.txt, product token, path, allowed)`.
type Case = (&'static str, &'static str, &'static str, &'static str, bool);

const RFC_EXAMPLE: &str = "User-Agent: *\nDisallow: *.gif$\nDisallow: /example/\nAllow: /publications/\n\n\
User-Agent: foobot\nDisallow:/\nAllow:/example/page.html\nAllow:/example/allowed.gif\n\n\
User-Agent: barbot\nUser-Agent: bazbot\nDisallow: /example/page.html\n\nUser-Agent: quxbot\n";

const MERGED_GROUPS: &str = "allow: /foo/bar/\n\nuser-agent: FooBot\ndisallow: /\nallow: /x/\n\
user-agent: BarBot\ndisallow: /\nallow: /y/\n\n\n\nallow: /w/\nuser-agent: BazBot\n\n\
user-agent: FooBot\nallow: /z/\ndisallow: /\n";

const CASES: &[Case] = &[
    // RFC 9309 section 5.1.
    ("rfc: foobot own group", RFC_EXAMPLE, "foobot", "/example/page.html", true),
    ("rfc: foobot allowed gif", RFC_EXAMPLE, "foobot", "/example/allowed.gif", true),
    ("rfc: foobot rest", RFC_EXAMPLE, "foobot", "/other", false),
    ("rfc: barbot", RFC_EXAMPLE, "barbot", "/example/page.html", false),
    ("rfc: bazbot shares the group", RFC_EXAMPLE, "bazbot", "/example/page.html", false),
    ("rfc: barbot not the star group", RFC_EXAMPLE, "barbot", "/example/x.gif", true),
    ("rfc: quxbot empty group allows all", RFC_EXAMPLE, "quxbot", "/example/x", true),
    ("rfc: others get star gif", RFC_EXAMPLE, "otherbot", "/x/y.gif", false),
    ("rfc: others get star gif$", RFC_EXAMPLE, "otherbot", "/x/y.gif?v=1", true),
    ("rfc: others get star dir", RFC_EXAMPLE, "otherbot", "/example/", false),
    ("rfc: others publications", RFC_EXAMPLE, "otherbot", "/publications/a", true),
    (
        "rfc: longest match",
        "user-agent: *\nallow: /example/page/\ndisallow: /example/page/disallowed.gif\n",
        "x",
        "/example/page/disallowed.gif",
        false,
    ),
    (
        "rfc: longest match other",
        "user-agent: *\nallow: /example/page/\ndisallow: /example/page/disallowed.gif\n",
        "x",
        "/example/page/ok.gif",
        true,
    ),
    // Line syntax.
    ("syntax: plain", "user-agent: FooBot\ndisallow: /\n", "foobot", "/x/y", false),
    ("syntax: unknown keys", "foo: FooBot\nbar: /\n", "foobot", "/x/y", true),
    ("syntax: missing colon", "user-agent FooBot\ndisallow /\n", "foobot", "/x/y", false),
    ("syntax: empty file", "", "foobot", "/", true),
    ("syntax: crlf and cr", "user-agent: FooBot\r\ndisallow: /a\rdisallow: /b\r\n", "foobot", "/b", false),
    // Groups: merged per agent, rules outside a group ignored, blank lines do not end one.
    ("groups: foobot first group", MERGED_GROUPS, "foobot", "/x/b", true),
    ("groups: foobot second group", MERGED_GROUPS, "foobot", "/z/d", true),
    ("groups: foobot not barbot's", MERGED_GROUPS, "foobot", "/y/c", false),
    ("groups: rule before any agent", MERGED_GROUPS, "foobot", "/foo/bar/", false),
    ("groups: barbot", MERGED_GROUPS, "barbot", "/y/c", true),
    ("groups: barbot after blank lines", MERGED_GROUPS, "barbot", "/w/a", true),
    ("groups: barbot rest", MERGED_GROUPS, "barbot", "/z/d", false),
    ("groups: bazbot grouped with foobot", MERGED_GROUPS, "bazbot", "/z/d", true),
    (
        "groups: sitemap does not close agents",
        "User-agent: BarBot\nSitemap: https://foo.bar/sitemap\nUser-agent: *\nDisallow: /\n",
        "barbot",
        "/",
        false,
    ),
    (
        "groups: unknown line does not close agents",
        "User-agent: FooBot\nInvalid-Unknown-Line: unknown\nUser-agent: *\nDisallow: /\n",
        "foobot",
        "/",
        false,
    ),
    // Case: keys and agents are case-insensitive, paths are not.
    ("case: upper keys", "USER-AGENT: FooBot\nALLOW: /x/\nDISALLOW: /\n", "foobot", "/x/y", true),
    ("case: upper keys rest", "USER-AGENT: FooBot\nALLOW: /x/\nDISALLOW: /\n", "foobot", "/a/b", false),
    ("case: mixed keys", "uSeR-aGeNt: FooBot\nAlLoW: /x/\ndIsAlLoW: /\n", "foobot", "/a/b", false),
    ("case: upper agent", "User-Agent: FOO BAR\nAllow: /x/\nDisallow: /\n", "foo", "/a/b", false),
    ("case: lower agent", "User-Agent: foo bar\nAllow: /x/\nDisallow: /\n", "FOO", "/a/b", false),
    (
        "case: agent up to first space",
        "User-Agent: *\nDisallow: /\nUser-Agent: Foo Bar\nAllow: /x/\nDisallow: /\n",
        "foo",
        "/x/y",
        true,
    ),
    (
        "case: the part after a space is not an agent",
        "User-Agent: *\nDisallow: /\nUser-Agent: Foo Bar\nAllow: /x/\nDisallow: /\n",
        "bar",
        "/x/y",
        false,
    ),
    ("case: paths are case-sensitive", "user-agent: FooBot\ndisallow: /x/\n", "foobot", "/X/", true),
    ("case: paths are case-sensitive 2", "user-agent: FooBot\ndisallow: /X/\n", "foobot", "/x/", true),
    // The star group applies only when no group names us; no group at all allows all.
    (
        "star: ours wins",
        "user-agent: *\nallow: /\nuser-agent: FooBot\ndisallow: /\n",
        "foobot",
        "/x/y",
        false,
    ),
    ("star: others", "user-agent: *\nallow: /\nuser-agent: FooBot\ndisallow: /\n", "barbot", "/x/y", true),
    (
        "star: none and not named",
        "user-agent: FooBot\nallow: /\nuser-agent: BarBot\ndisallow: /\nuser-agent: BazBot\ndisallow: /\n",
        "quxbot",
        "/x/y",
        true,
    ),
    ("star: substring is not a match", "user-agent: Foo\ndisallow: /\n", "foobot", "/x", true),
    (
        "agent: a version is not part of the token",
        "user-agent: FooBot/2.1\ndisallow: /\n",
        "foobot",
        "/x",
        false,
    ),
    ("star: empty agent is not a match", "user-agent:\ndisallow: /\n", "foobot", "/x", true),
    // Longest match; allow wins a tie.
    (
        "longest: tie",
        "user-agent: FooBot\ndisallow: /x/page.html\nallow: /x/page.html\n",
        "foobot",
        "/x/page.html",
        true,
    ),
    (
        "longest: tie reversed",
        "user-agent: FooBot\nallow: /x/page.html\ndisallow: /x/page.html\n",
        "foobot",
        "/x/page.html",
        true,
    ),
    (
        "longest: wildcard longer",
        "user-agent: FooBot\nallow: /page\ndisallow: /*.html\n",
        "foobot",
        "/page.html",
        false,
    ),
    (
        "longest: wildcard not matching",
        "user-agent: FooBot\nallow: /page\ndisallow: /*.html\n",
        "foobot",
        "/page",
        true,
    ),
    (
        "longest: allow longer",
        "user-agent: FooBot\nallow: /x/page.\ndisallow: /*.html\n",
        "foobot",
        "/x/page.html",
        true,
    ),
    (
        "longest: other html",
        "user-agent: FooBot\nallow: /x/page.\ndisallow: /*.html\n",
        "foobot",
        "/x/y.html",
        false,
    ),
    (
        "longest: dir allowed",
        "User-agent: *\nDisallow: /x/\nUser-agent: FooBot\nDisallow: /y/\n",
        "foobot",
        "/x/page",
        true,
    ),
    ("longest: anchored root", "user-agent: FooBot\nallow: /$\ndisallow: /\n", "foobot", "/", true),
    (
        "longest: anchored root rest",
        "user-agent: FooBot\nallow: /$\ndisallow: /\n",
        "foobot",
        "/page.html",
        false,
    ),
    (
        "longest: shorter disallow",
        "user-agent: FooBot\ndisallow: /x/\nallow: /x/page.html\n",
        "foobot",
        "/x/page.html",
        true,
    ),
    ("longest: empty disallow allows", "user-agent: FooBot\ndisallow:\n", "foobot", "/x", true),
    // Percent-encoding: both sides normalised before comparison.
    (
        "enc: query with url",
        "User-agent: FooBot\nDisallow: /\nAllow: /foo/bar?qux=taz&baz=http://foo.bar?tar&par\n",
        "foobot",
        "/foo/bar?qux=taz&baz=http://foo.bar?tar&par",
        true,
    ),
    (
        "enc: utf-8 rule, encoded url",
        "User-agent: FooBot\nDisallow: /\nAllow: /foo/bar/ツ\n",
        "foobot",
        "/foo/bar/%E3%83%84",
        true,
    ),
    (
        "enc: encoded rule, encoded url",
        "User-agent: FooBot\nDisallow: /\nAllow: /foo/bar/%E3%83%84\n",
        "foobot",
        "/foo/bar/%E3%83%84",
        true,
    ),
    (
        "enc: hex case",
        "User-agent: FooBot\nDisallow: /\nAllow: /foo/bar/%e3%83%84\n",
        "foobot",
        "/foo/bar/%E3%83%84",
        true,
    ),
    (
        "enc: unreserved decoded",
        "User-agent: FooBot\nDisallow: /\nAllow: /foo/bar/%62%61%7A\n",
        "foobot",
        "/foo/bar/baz",
        true,
    ),
    ("enc: tilde", "User-agent: FooBot\nDisallow: /%7Ejoe/\n", "foobot", "/~joe/index.html", false),
    ("enc: reserved kept encoded", "User-agent: FooBot\nDisallow: /a%2Fb\n", "foobot", "/a/b", true),
    // Special characters.
    (
        "special: star in the middle",
        "User-agent: FooBot\nDisallow: /foo/bar/quz\nAllow: /foo/*/qux\n",
        "foobot",
        "/foo/bar/quz",
        false,
    ),
    (
        "special: star in the middle 2",
        "User-agent: FooBot\nDisallow: /foo/bar/quz\nAllow: /foo/*/qux\n",
        "foobot",
        "/foo/quz",
        true,
    ),
    (
        "special: star in the middle 3",
        "User-agent: FooBot\nDisallow: /foo/bar/quz\nAllow: /foo/*/qux\n",
        "foobot",
        "/foo//quz",
        true,
    ),
    (
        "special: star in the middle 4",
        "User-agent: FooBot\nDisallow: /foo/bar/quz\nAllow: /foo/*/qux\n",
        "foobot",
        "/foo/bax/quz",
        true,
    ),
    (
        "special: dollar",
        "User-agent: FooBot\nDisallow: /foo/bar$\nAllow: /foo/bar/qux\n",
        "foobot",
        "/foo/bar",
        false,
    ),
    (
        "special: dollar 2",
        "User-agent: FooBot\nDisallow: /foo/bar$\nAllow: /foo/bar/qux\n",
        "foobot",
        "/foo/bar/qux",
        true,
    ),
    (
        "special: dollar 3",
        "User-agent: FooBot\nDisallow: /foo/bar$\nAllow: /foo/bar/qux\n",
        "foobot",
        "/foo/bar/",
        true,
    ),
    (
        "special: dollar 4",
        "User-agent: FooBot\nDisallow: /foo/bar$\nAllow: /foo/bar/qux\n",
        "foobot",
        "/foo/bar/baz",
        true,
    ),
    (
        "special: comments",
        "User-agent: FooBot\n# Disallow: /\nDisallow: /foo/quz#qux\nAllow: /\n",
        "foobot",
        "/foo/bar",
        true,
    ),
    (
        "special: comment cuts the value",
        "User-agent: FooBot\n# Disallow: /\nDisallow: /foo/quz#qux\nAllow: /\n",
        "foobot",
        "/foo/quz",
        false,
    ),
    ("special: robots.txt itself", "User-agent: *\nDisallow: /\n", "foobot", "/robots.txt", true),
];

#[test]
fn the_case_list() {
    let mut failed = Vec::new();
    for (label, txt, agent, path, want) in CASES {
        let got = Robots::parse(txt.as_bytes(), &format!("{agent}/1.0")).allowed(path);
        if got != *want {
            failed.push(format!("{label}: {path} allowed={got}, want {want}"));
        }
    }
    assert!(failed.is_empty(), "{} of {} cases failed:\n{}", failed.len(), CASES.len(), failed.join("\n"));
}

#[test]
fn our_product_token_is_taken_from_the_user_agent() {
    // A substring of our token, an empty agent line and another product are not us.
    for agent in ["c", "", "crawl", "crawler-other", "mycrawler"] {
        let text = format!("User-agent: {agent}\nDisallow: /\n\nUser-agent: *\nDisallow: /star/\n");
        let r = Robots::parse(text.as_bytes(), UA);
        assert!(r.allowed("/x"), "{agent:?} was taken for our group");
        assert!(!r.allowed("/star/x"), "{agent:?}");
    }
    let r = Robots::parse(b"User-agent: CRAWLER\nDisallow: /mine/\n\nUser-agent: *\nDisallow: /\n", UA);
    assert!(r.allowed("/x"));
    assert!(!r.allowed("/mine/x"));
}

#[test]
fn a_leading_byte_order_mark_is_skipped() {
    let r = Robots::parse(b"\xEF\xBB\xBFUser-agent: *\nDisallow: /private\n", UA);
    assert!(!r.allowed("/private"));
    assert!(r.allowed("/public"));
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
fn only_the_first_500_kib_are_read() {
    let mut txt = b"User-agent: *\nDisallow: /early/\n".to_vec();
    while txt.len() < MAX_ROBOTS_BYTES + 1000 {
        txt.extend_from_slice(b"# padding padding padding padding padding padding padding\n");
    }
    txt.extend_from_slice(b"Disallow: /late/\n");
    let r = Robots::parse(&txt, UA);
    assert!(!r.allowed("/early/x"));
    assert!(r.allowed("/late/x"), "a rule past the cap was applied");
    // A line cut by the cap is dropped, not read short.
    let mut cut = b"User-agent: *\nDisallow: /pr\n".to_vec();
    cut.resize(MAX_ROBOTS_BYTES - 5, b'\n');
    cut.extend_from_slice(b"Allow: /private-ok\n");
    assert!(!Robots::parse(&cut, UA).allowed("/private"), "a cut Allow line allowed more than written");
    // Invalid UTF-8 does not hide the rest.
    let r = Robots::parse(b"User-agent: *\n\xff\xfe junk\nDisallow: /x\n", UA);
    assert!(!r.allowed("/x"));
}

#[test]
fn crawl_delay_of_our_group_else_star() {
    let txt = b"User-agent: *\nCrawl-delay: 4\nDisallow: /a\n\nUser-agent: crawler\nCrawl-delay: 0.5\n";
    assert_eq!(Robots::parse(txt, UA).crawl_delay(), Some(Duration::from_millis(500)));
    assert_eq!(Robots::parse(txt, "other/1").crawl_delay(), Some(Duration::from_secs(4)));
    for bad in ["soon", "-1", "NaN", "inf", ""] {
        let txt = format!("User-agent: *\nCrawl-delay: {bad}\n");
        assert_eq!(Robots::parse(txt.as_bytes(), UA).crawl_delay(), None, "{bad:?}");
    }
    // Before any user-agent line it belongs to no group.
    assert_eq!(Robots::parse(b"Crawl-delay: 3\nUser-agent: *\nDisallow: /x\n", UA).crawl_delay(), None);
}

#[test]
fn sitemaps_apply_to_every_agent() {
    let txt = b"Sitemap: http://h/a.xml\nUser-agent: other\nDisallow: /\nsitemap: http://h/b.xml.gz # c\n";
    let r = Robots::parse(txt, UA);
    assert_eq!(r.sitemaps(), ["http://h/a.xml", "http://h/b.xml.gz"]);
    assert!(r.allowed("/x"));
}

#[test]
fn normalisation() {
    assert_eq!(normalize("/a b/ä%7e%2f%zz%4"), "/a%20b/%C3%A4~%2F%zz%4");
    assert_eq!(normalize("/*.gif$"), "/*.gif$");
}

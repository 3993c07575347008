//! HTML character references in text and attribute values: numeric ones and the named ones
//! that occur in practice. Unknown names are left as written.

use std::borrow::Cow;

const NAMED: &[(&str, &str)] = &[
    ("amp", "&"),
    ("lt", "<"),
    ("gt", ">"),
    ("quot", "\""),
    ("apos", "'"),
    ("nbsp", "\u{a0}"),
    ("copy", "©"),
    ("reg", "®"),
    ("trade", "™"),
    ("hellip", "…"),
    ("mdash", "—"),
    ("ndash", "–"),
    ("lsquo", "‘"),
    ("rsquo", "’"),
    ("ldquo", "“"),
    ("rdquo", "”"),
    ("laquo", "«"),
    ("raquo", "»"),
    ("middot", "·"),
    ("bull", "•"),
    ("euro", "€"),
    ("pound", "£"),
    ("yen", "¥"),
    ("cent", "¢"),
    ("sect", "§"),
    ("deg", "°"),
    ("times", "×"),
    ("divide", "÷"),
    ("plusmn", "±"),
    ("frac12", "½"),
    ("para", "¶"),
    ("iexcl", "¡"),
    ("iquest", "¿"),
    ("shy", "\u{ad}"),
    ("eacute", "é"),
    ("egrave", "è"),
    ("ecirc", "ê"),
    ("aacute", "á"),
    ("agrave", "à"),
    ("acirc", "â"),
    ("auml", "ä"),
    ("ouml", "ö"),
    ("uuml", "ü"),
    ("szlig", "ß"),
    ("ccedil", "ç"),
    ("ntilde", "ñ"),
    ("oacute", "ó"),
    ("iacute", "í"),
    ("uacute", "ú"),
    ("Auml", "Ä"),
    ("Ouml", "Ö"),
    ("Uuml", "Ü"),
    ("Eacute", "É"),
    ("zwj", "\u{200d}"),
    ("zwnj", "\u{200c}"),
    ("thinsp", "\u{2009}"),
    ("ensp", "\u{2002}"),
    ("emsp", "\u{2003}"),
    ("larr", "←"),
    ("rarr", "→"),
    ("uarr", "↑"),
    ("darr", "↓"),
    ("hearts", "♥"),
    ("star", "☆"),
    ("check", "✓"),
];

/// Replaces character references (`&amp;`, `&#233;`, `&#xE9;`, `&nbsp;` …) with their text.
pub fn decode_entities(s: &str) -> Cow<'_, str> {
    if !s.contains('&') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        match decode_one(rest) {
            Some((text, used)) => {
                out.push_str(&text);
                rest = &rest[used..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Decodes the reference at the start of `s` (which begins with `&`): its text and length.
fn decode_one(s: &str) -> Option<(Cow<'static, str>, usize)> {
    let body = &s[1..];
    if let Some(num) = body.strip_prefix('#') {
        let (digits, radix, skip) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 3),
            None => (num, 10, 2),
        };
        let len = digits.chars().take_while(|c| c.is_digit(radix)).count();
        if len == 0 {
            return None;
        }
        let code = u32::from_str_radix(&digits[..len.min(8)], radix).ok()?;
        let c = char::from_u32(code).filter(|c| *c != '\0').unwrap_or('\u{fffd}');
        let semi = usize::from(digits[len..].starts_with(';'));
        return Some((Cow::Owned(c.to_string()), skip + len + semi));
    }
    let len = body.chars().take_while(char::is_ascii_alphanumeric).count();
    let name = &body[..len];
    let (_, text) = NAMED.iter().find(|(n, _)| *n == name)?;
    let semi = usize::from(body[len..].starts_with(';'));
    Some((Cow::Borrowed(text), 1 + len + semi))
}

#[cfg(test)]
mod tests {
    use super::decode_entities;

    #[test]
    fn decodes_common_references() {
        assert_eq!(decode_entities("a &amp; b"), "a & b");
        assert_eq!(decode_entities("&#233;&#xE9;&#XE9"), "ééé");
        assert_eq!(decode_entities("&pound;51.77&nbsp;"), "£51.77\u{a0}");
        assert_eq!(decode_entities("&unknown; & &#; &#xZZ;"), "&unknown; & &#; &#xZZ;");
        assert_eq!(decode_entities("&#0;&#99999999999;"), "\u{fffd}\u{fffd}");
        assert_eq!(decode_entities("plain"), "plain");
    }
}

//! HTML character references, decoded the two ways OpenCLIP's text cleaning decodes them.
//!
//! - [`unescape`]: Python's `html.unescape` (the HTML5 rules): named references with or without `;` (the
//!   longest known prefix of an unterminated name), decimal and hex numeric references with the standard's
//!   replacements (`&#128;` is `€`, surrogates and values past U+10FFFF are U+FFFD, noncharacters vanish).
//! - [`unescape_strict`]: ftfy's cautious variant: only `&name;` references terminated by `;` (at most 24
//!   characters), plus all-caps spellings of lower-case names (`&EACUTE;` is `É`) that are not references already.
//!
//! The tables are Python's own (`html.entities.html5`, `html._invalid_charrefs`, `html._invalid_codepoints`),
//! written to `data/html_entities.txt` by `scripts/gen_clip_tokenizer.py`.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

const TABLE: &str = include_str!("../data/html_entities.txt");

struct Tables {
    /// Name (with its `;` where the standard has one) -> characters.
    entities: HashMap<&'static str, String>,
    /// Numeric references replaced by the standard (NUL, CR, the windows-1252 block 0x80-0x9F).
    charrefs: HashMap<u32, String>,
    /// Numeric references that decode to nothing.
    invalid: HashSet<u32>,
    /// ftfy's table: `&name;` -> characters, all-caps variants included.
    strict: HashMap<String, String>,
}

fn chars(hex: &str) -> String {
    hex.split(' ')
        .filter_map(|h| u32::from_str_radix(h, 16).ok())
        .filter_map(char::from_u32)
        .collect()
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let mut t = Tables {
            entities: HashMap::new(),
            charrefs: HashMap::new(),
            invalid: HashSet::new(),
            strict: HashMap::new(),
        };
        for line in TABLE.lines().filter(|l| !l.starts_with('#')) {
            let mut fields = line.split('\t');
            match (fields.next(), fields.next(), fields.next()) {
                (Some("entity"), Some(name), Some(hex)) => {
                    t.entities.insert(name, chars(hex));
                }
                (Some("charref"), Some(n), Some(hex)) => {
                    if let Ok(n) = u32::from_str_radix(n, 16) {
                        t.charrefs.insert(n, chars(hex));
                    }
                }
                (Some("invalid"), Some(n), None) => {
                    if let Ok(n) = u32::from_str_radix(n, 16) {
                        t.invalid.insert(n);
                    }
                }
                _ => {}
            }
        }
        // ftfy: every `;`-terminated name; and for lower-case names, the all-caps spelling when the HTML rules
        // do not already decode it, standing for the upper-cased characters.
        let mut strict = HashMap::new();
        for (name, value) in &t.entities {
            if !name.ends_with(';') {
                continue;
            }
            strict.insert(format!("&{name}"), value.clone());
        }
        for (name, value) in &t.entities {
            if name.ends_with(';') && *name == name.to_lowercase() {
                let upper = format!("&{}", name.to_uppercase());
                if unescape_with(&t, &upper) == upper {
                    strict.insert(upper, value.to_uppercase());
                }
            }
        }
        t.strict = strict;
        t
    })
}

/// Python's `html.unescape`.
pub fn unescape(s: &str) -> String {
    unescape_with(tables(), s)
}

/// Characters `[^\t\n\f <&#;]` a reference name may hold.
fn name_char(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';')
}

fn unescape_with(t: &Tables, s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        match reference(t, after) {
            Some((decoded, used)) => {
                out.push_str(&decoded);
                rest = &after[used..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the reference at the start of `s` (just after an `&`): the text it stands for and the bytes it used.
fn reference(t: &Tables, s: &str) -> Option<(String, usize)> {
    if let Some(num) = s.strip_prefix('#') {
        let (hex, digits) = match num.strip_prefix(['x', 'X']) {
            Some(h) => (true, h),
            None => (false, num),
        };
        let len = digits
            .bytes()
            .take_while(|b| if hex { b.is_ascii_hexdigit() } else { b.is_ascii_digit() })
            .count();
        if len == 0 {
            return None;
        }
        let prefix = 1 + usize::from(hex);
        let semi = usize::from(digits[len..].starts_with(';'));
        return Some((numeric(t, &digits[..len], hex), prefix + len + semi));
    }
    // A name: 1 to 32 characters, then an optional `;`.
    let name_len: usize = s
        .chars()
        .take_while(|&c| name_char(c))
        .take(32)
        .map(char::len_utf8)
        .sum();
    if name_len == 0 {
        return None;
    }
    let used = name_len + usize::from(s[name_len..].starts_with(';'));
    let name = &s[..used];
    if let Some(v) = t.entities.get(name) {
        return Some((v.clone(), used));
    }
    // The longest known prefix of at least two characters (an unterminated legacy name like `&amp` or `&copy`).
    let bounds: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &end in bounds.iter().rev() {
        if let Some(v) = t.entities.get(&name[..end]) {
            return Some((format!("{v}{}", &name[end..]), used));
        }
    }
    Some((format!("&{name}"), used))
}

/// A numeric reference's text, following `html.unescape`: the standard's replacements first, then U+FFFD for
/// surrogates and values past U+10FFFF, nothing for noncharacters and most controls, else the character.
fn numeric(t: &Tables, digits: &str, hex: bool) -> String {
    let radix = if hex { 16 } else { 10 };
    // Saturating: any value past U+10FFFF reads the same.
    let num = digits
        .chars()
        .filter_map(|c| c.to_digit(radix))
        .fold(0u64, |n, d| (n * radix as u64 + d as u64).min(1 << 40));
    let num32 = u32::try_from(num).unwrap_or(u32::MAX);
    if let Some(v) = t.charrefs.get(&num32) {
        return v.clone();
    }
    if (0xD800..=0xDFFF).contains(&num) || num > 0x10FFFF {
        return '\u{FFFD}'.to_string();
    }
    if t.invalid.contains(&num32) {
        return String::new();
    }
    char::from_u32(num32)
        .map(String::from)
        .unwrap_or_else(|| '\u{FFFD}'.to_string())
}

/// ftfy's `unescape_html`: `&#?[0-9A-Za-z]{1,24};` references, named ones from its table, numeric ones
/// through [`unescape`] (kept as written when that cannot decode them).
pub fn unescape_strict(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let t = tables();
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let candidate = &rest[amp..];
        let hash = usize::from(candidate[1..].starts_with('#'));
        let body = candidate[1 + hash..]
            .bytes()
            .take_while(u8::is_ascii_alphanumeric)
            .count();
        let end = 1 + hash + body;
        if (1..=24).contains(&body) && candidate[end..].starts_with(';') {
            let reference = &candidate[..end + 1];
            let decoded = if let Some(v) = t.strict.get(reference) {
                v.clone()
            } else if hash == 1 {
                let u = unescape_with(t, reference);
                if u.contains(';') {
                    reference.to_string()
                } else {
                    u
                }
            } else {
                reference.to_string()
            };
            out.push_str(&decoded);
            rest = &candidate[end + 1..];
        } else {
            out.push('&');
            rest = &candidate[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rules() {
        let cases = [
            ("&amp;", "&"),
            ("&amp;amp;", "&amp;"),
            ("&ampfoo", "&foo"),
            ("&copy 2024", "© 2024"),
            ("&notit;", "¬it;"),
            ("&#39;&#x27;&#X27;", "'''"),
            ("&#128;", "€"),
            ("&#0;", "\u{FFFD}"),
            ("&#xD800;", "\u{FFFD}"),
            ("&#1114112;", "\u{FFFD}"),
            ("&#99999999999999999999;", "\u{FFFD}"),
            ("&#11;", ""),
            ("&#x1fffe;", ""),
            ("&#65&#66", "AB"),
            ("&#;&#x;& amp;&;", "&#;&#x;& amp;&;"),
            ("&nosuchentity;", "&nosuchentity;"),
            ("&Jscr;", "\u{1d4a5}"),
            ("caf&eacute;", "café"),
        ];
        for (s, want) in cases {
            assert_eq!(unescape(s), want, "{s}");
        }
    }

    #[test]
    fn ftfy_rules() {
        let cases = [
            ("&amp;amp;", "&amp;"),
            ("&amp", "&amp"),
            ("&copy 2024", "&copy 2024"),
            ("P&EACUTE;REZ", "PÉREZ"),
            ("BUNDESSTRA&SZLIG;E", "BUNDESSTRASSE"),
            ("&ntilde; &Ntilde; &NTILDE; &nTILDE;", "ñ Ñ Ñ &nTILDE;"),
            ("&AMP;", "&"),
            ("&#x263a;", "☺"),
            ("&#xZZ;", "&#xZZ;"),
            ("&notit;", "&notit;"),
        ];
        for (s, want) in cases {
            assert_eq!(unescape_strict(s), want, "{s}");
        }
    }
}

//! The text cleaning OpenCLIP applies before tokenizing (`SimpleTokenizer` with `clean='lower'`).
//!
//! `ftfy.fix_text`, then Python's `html.unescape` twice, then Python's whitespace rules (`split()` and `strip()`,
//! which also count U+001C..U+001F as space), then `str.lower()` (with the final-sigma rule). Of ftfy's fixes,
//! these are reproduced, in ftfy's order and repeated until nothing changes, line by line:
//! ftfy's own HTML unescaping (skipped from the first line holding a `<` on), C1 controls read as windows-1252,
//! Latin ligatures, full- and half-width forms, curly quotes, line breaks, ANSI terminal escapes, control
//! characters, and NFC normalization.
//!
//! **The gaps:** ftfy's mojibake repair (`fix_encoding`: text that was UTF-8 decoded as Latin-1 or windows-125x,
//! like `sÃ³` for `só`) is not reproduced. Such text tokenizes as written here, where OpenCLIP would first repair
//! it; `tests/fixtures/tokenizer_corpus.json` lists the strings of the corpus this affects. Text escaped more
//! than [`MAX_FIX_PASSES`] times over keeps the deeper levels (ftfy has no bound). Unicode tables are
//! Rust's (Python 3.11 has Unicode 14), so characters assigned since may be classified differently.
//!
//! ```
//! use clip::clean::clean_text;
//! assert_eq!(clean_text("  Tom &amp;amp; JERRY\r\n"), "tom & jerry");
//! assert_eq!(clean_text("ＬＯＵＤ　“ﬁsh”"), "loud \"fish\"");
//! ```

use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;

use crate::html;

/// OpenCLIP's cleaning of one text: the string its tokenizer splits into words.
pub fn clean_text(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html::unescape(&html::unescape(&fixed));
    let words: Vec<&str> = unescaped.split(is_py_space).filter(|w| !w.is_empty()).collect();
    words.join(" ").to_lowercase()
}

/// Python's `str.isspace()`: Unicode White_Space plus the four information separators U+001C..U+001F.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The reproduced part of `ftfy.fix_text` (see the module docs).
pub fn fix_text(text: &str) -> String {
    // ftfy fixes segments of at most this many characters, cut after each line break.
    const MAX_SEGMENT: usize = 1_000_000;
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    for line in text.split_inclusive('\n') {
        let mut rest = line;
        while !rest.is_empty() {
            let cut = rest.char_indices().nth(MAX_SEGMENT).map_or(rest.len(), |(i, _)| i);
            let (segment, tail) = rest.split_at(cut);
            // A literal `<` means HTML: from here on, entities stay as written (as ftfy's `unescape_html="auto"`).
            if segment.contains('<') {
                unescape = false;
            }
            out.push_str(&fix_segment(segment, unescape));
            rest = tail;
        }
    }
    out
}

/// Passes of the fixes over one segment at most. ftfy repeats them until nothing changes; each pass peels one
/// level of HTML escaping (`&amp;amp;lt;` takes three), so a string escaped a million times over would take a
/// million passes over itself. Past this many levels the rest stays escaped (a documented difference).
pub const MAX_FIX_PASSES: usize = 64;

fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_string();
    for _ in 0..MAX_FIX_PASSES {
        let before = text.clone();
        if unescape {
            text = html::unescape_strict(&text);
        }
        text = text.chars().map(c1_as_windows_1252).collect();
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = text.chars().map(uncurl_quote).collect();
        text = text
            .replace("\r\n", "\n")
            .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n");
        text = remove_terminal_escapes(&text);
        text.retain(|c| !is_removed_control(c));
        text = text.nfc().collect();
        if text == before {
            break;
        }
    }
    text
}

/// C1 controls U+0080..U+009F as the windows-1252 characters of the same byte (bytes windows-1252 leaves
/// undefined stay as they are); the table is the HTML standard's, as for `&#128;`.
fn c1_as_windows_1252(c: char) -> char {
    const TABLE: [char; 32] = [
        '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}', '\u{2021}', '\u{2c6}',
        '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}', '\u{8f}', '\u{90}', '\u{2018}', '\u{2019}',
        '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}', '\u{2014}', '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}',
        '\u{153}', '\u{9d}', '\u{17e}', '\u{178}',
    ];
    match c as u32 {
        n @ 0x80..=0x9f => TABLE[(n - 0x80) as usize],
        _ => c,
    }
}

/// Single-character Latin ligatures and digraphs spelled out (ftfy's list).
fn fix_latin_ligatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let s = match c {
            'Ĳ' => "IJ",
            'ĳ' => "ij",
            'ŉ' => "ʼn",
            'Ǳ' => "DZ",
            'ǲ' => "Dz",
            'ǳ' => "dz",
            'Ǆ' => "DŽ",
            'ǅ' => "Dž",
            'ǆ' => "dž",
            'Ǉ' => "LJ",
            'ǈ' => "Lj",
            'ǉ' => "lj",
            'Ǌ' => "NJ",
            'ǋ' => "Nj",
            'ǌ' => "nj",
            'ﬀ' => "ff",
            'ﬁ' => "fi",
            'ﬂ' => "fl",
            'ﬃ' => "ffi",
            'ﬄ' => "ffl",
            'ﬅ' => "ſt",
            'ﬆ' => "st",
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push_str(s);
    }
    out
}

/// Full-width and half-width forms (U+FF01..U+FFEF) as their NFKC forms, the ideographic space as a space.
fn fix_character_width(text: &str) -> String {
    static MAP: OnceLock<Vec<(char, String)>> = OnceLock::new();
    let map = MAP.get_or_init(|| {
        let mut map = vec![('\u{3000}', " ".to_string())];
        for c in '\u{ff01}'..='\u{ffef}' {
            let alt: String = c.nfkc().collect();
            if alt != c.to_string() {
                map.push((c, alt));
            }
        }
        map
    });
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match map.binary_search_by_key(&c, |(k, _)| *k) {
            Ok(i) => out.push_str(&map[i].1),
            Err(_) => out.push(c),
        }
    }
    out
}

/// `‘ ’ ‚ ‛ ʼ` as `'`, `“ ” „ ‟` as `"`.
fn uncurl_quote(c: char) -> char {
    match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
        '\u{201c}'..='\u{201f}' => '"',
        _ => c,
    }
}

/// ANSI escapes: ESC `[` digits and `;`, then a letter.
fn remove_terminal_escapes(text: &str) -> String {
    static ANSI: OnceLock<Option<regex::Regex>> = OnceLock::new();
    match ANSI.get_or_init(|| regex::Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").ok()) {
        Some(re) if text.contains('\x1b') => re.replace_all(text, "").into_owned(),
        _ => text.to_string(),
    }
}

/// Controls ftfy deletes: C0 controls other than tab, line feed, form feed and carriage return; DEL; the
/// deprecated format controls U+206A..U+206F; the byte-order mark; interlinear annotations and U+FFFC.
fn is_removed_control(c: char) -> bool {
    let c0 = matches!(c, '\0'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}');
    c0 || matches!(c, '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftfy_examples() {
        let cases = [
            (
                "Broken text&hellip; it&#x2019;s ﬂubberiﬁc!",
                "Broken text… it's flubberific!",
            ),
            ("ＬＯＵＤ　ＮＯＩＳＥＳ", "LOUD NOISES"),
            ("Ｕﾀｰﾝ", "Uターン"),
            ("\u{1b}[36;44mblue\u{1b}[0m", "blue"),
            ("a\r\nb\rc", "a\nb\nc"),
            ("cafe\u{301}", "café"),
            ("<b>&amp;</b>", "<b>&amp;</b>"),
            ("&amp;\n<\n&amp;", "&\n<\n&amp;"),
        ];
        for (s, want) in cases {
            assert_eq!(fix_text(s), want, "{s:?}");
        }
    }

    #[test]
    fn deep_escaping_is_bounded() {
        // 20 000 levels of `&amp;`: ftfy would take 20 000 passes; here the work stops after MAX_FIX_PASSES.
        let deep = format!("&{}lt;", "amp;".repeat(20_000));
        let fixed = fix_text(&deep);
        assert_eq!(fixed.len(), deep.len() - 4 * MAX_FIX_PASSES);
        assert_eq!(fix_text("&amp;amp;amp;lt;3"), "<3");
    }

    #[test]
    fn clean_lowers_and_collapses_whitespace() {
        // (ftfy deletes U+001C as a control character before Python's whitespace rules could see a space.)
        assert_eq!(clean_text("  A\u{a0}Photo\u{1c}OF   the  CAT\t"), "a photoof the cat");
        assert_eq!(clean_text("a\u{2003}b\u{3000}c"), "a b c");
        assert_eq!(clean_text("ΣΊΣΥΦΟΣ"), "σίσυφος");
        assert_eq!(clean_text("Tom &amp;amp; Jerry"), "tom & jerry");
        assert_eq!(clean_text(""), "");
    }
}

//! What text from outside may look like on a terminal.
//!
//! Texts, check-in notes and contact names come from contacts (or, for names, from whatever
//! the user pasted), and a terminal obeys what it is given: a line break starts what looks
//! like a new message from anyone, `ESC[2J` clears the screen, a right-to-left override
//! reverses what follows, a zero-width space makes two names look alike. Every human-readable
//! line the `tidings` binary prints from such text goes through this module:
//!
//! - [`message`] prints a message as `NAME: FIRST LINE`, and each further line of the text
//!   indented by [`INDENT`], so no text can start a line of its own;
//! - every character for which [`is_hidden`] is true (controls, format characters such as
//!   bidi overrides, isolates and marks, zero-width characters, line and paragraph
//!   separators, other invisible fillers) is shown escaped by [`escape_char`], as `\e`, `\t`,
//!   `\r`, `\n` or `\u{202e}`;
//! - a text whose first visible character is a bracket is shown with a backslash before it
//!   (`\[`), so no text can pass for a `[check-in]` line;
//! - [`inline`] escapes a name (or anything else shown inside one line) the same way, line
//!   breaks included.
//!
//! `--json` output keeps every string exact: [`json`] writes it with serde, and escapes as
//! `\uXXXX` (which any JSON parser reads back as the same character) the hidden characters
//! that serde would otherwise write raw, so JSON on a terminal is as safe as the lines.
//!
//! Limits: a terminal wraps a line longer than its width, and a text padded to that width
//! can make a wrapped row begin with words of its choosing (still on the sender's line, with
//! no line break); look-alike letters from other scripts are shown as they are.

use std::fmt::Write as _;

/// How the second and later lines of a message start.
pub const INDENT: &str = "    ";

/// Default-ignorable and format code points other than the C0/C1 controls (Unicode 15.1,
/// general category Cf plus `Default_Ignorable_Code_Point` plus Zl and Zp), as inclusive
/// ranges. Unassigned code points inside these blocks are included on purpose.
const HIDDEN: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),   // soft hyphen
    (0x034F, 0x034F),   // combining grapheme joiner
    (0x0600, 0x0605),   // Arabic number signs
    (0x061C, 0x061C),   // Arabic letter mark
    (0x06DD, 0x06DD),   // Arabic end of ayah
    (0x070F, 0x070F),   // Syriac abbreviation mark
    (0x0890, 0x0891),   // Arabic pound and piastre marks above
    (0x08E2, 0x08E2),   // Arabic disputed end of ayah
    (0x115F, 0x1160),   // Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),   // Khmer inherent vowels
    (0x180B, 0x180F),   // Mongolian free variation selectors and vowel separator
    (0x200B, 0x200F),   // zero-width space, (non-)joiner, LRM, RLM
    (0x2028, 0x2029),   // line and paragraph separators
    (0x202A, 0x202E),   // bidi embeddings and overrides
    (0x2060, 0x206F),   // word joiner, invisible operators, bidi isolates, deprecated
    (0x3164, 0x3164),   // Hangul filler
    (0xFE00, 0xFE0F),   // variation selectors (see `is_hidden` for emoji)
    (0xFEFF, 0xFEFF),   // zero-width no-break space (byte order mark)
    (0xFFA0, 0xFFA0),   // halfwidth Hangul filler
    (0xFFF0, 0xFFFB),   // unassigned specials, interlinear annotation
    (0x110BD, 0x110BD), // Kaithi number sign
    (0x110CD, 0x110CD), // Kaithi number sign above
    (0x13430, 0x1343F), // Egyptian hieroglyph format controls
    (0x1BCA0, 0x1BCA3), // shorthand format controls
    (0x1D173, 0x1D17A), // musical symbol format controls
    (0xE0000, 0xE0FFF), // tags and variation selectors supplement
];

/// Whether `c` is shown escaped: a control character (C0, DEL, C1), a format character
/// (Unicode Cf: bidi overrides, isolates and marks, zero-width characters, tags...), a line
/// or paragraph separator, or another invisible filler or selector.
///
/// The emoji presentation selectors U+FE0E and U+FE0F are the one exception when they follow
/// a visible character outside ASCII (`❤️`); [`escape_into`] handles that case.
pub fn is_hidden(c: char) -> bool {
    if c.is_control() {
        return true;
    }
    let n = u32::from(c);
    HIDDEN.iter().any(|&(lo, hi)| (lo..=hi).contains(&n))
}

/// Writes the visible escape of `c`: `\e`, `\t`, `\r`, `\n`, `\0` or `\u{HEX}`.
pub fn escape_char(out: &mut String, c: char) {
    match c {
        '\u{1b}' => out.push_str("\\e"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        '\n' => out.push_str("\\n"),
        '\0' => out.push_str("\\0"),
        _ => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// Appends `text` to `out` with every hidden character escaped (line breaks too).
fn escape_into(out: &mut String, text: &str) {
    let mut prev: Option<char> = None;
    for c in text.chars() {
        let emoji_selector = matches!(c, '\u{fe0e}' | '\u{fe0f}')
            && prev.is_some_and(|p| !p.is_ascii() && !is_hidden(p));
        if is_hidden(c) && !emoji_selector {
            escape_char(out, c);
        } else {
            out.push(c);
        }
        prev = Some(c);
    }
}

/// `text` on one line, every hidden character (line breaks included) escaped: for names and
/// other short text shown inside a line.
pub fn inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

/// A message from `name` as the lines a person reads, joined by `\n` (no final line break):
/// `NAME: FIRST LINE`, then every further line of `text` indented by [`INDENT`]. Lines break
/// at `\n` (and `\r\n`) only; every other hidden character is escaped.
///
/// `is_text` is true for a text message (as opposed to a check-in, whose text starts with
/// the `[check-in]` marker made here): a bracket as its first visible character is shown
/// as `\[`.
pub fn message(name: &str, text: &str, is_text: bool) -> String {
    let mut out = String::with_capacity(name.len() + text.len() + 8);
    escape_into(&mut out, name);
    out.push_str(": ");
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i > 0 {
            out.push('\n');
            out.push_str(INDENT);
        }
        if i == 0 && is_text {
            let body = line.trim_start();
            let lead = line.get(..line.len() - body.len()).unwrap_or_default();
            escape_into(&mut out, lead);
            let mut chars = body.chars();
            if let Some(bracket @ ('[' | '\u{ff3b}')) = chars.next() {
                out.push('\\');
                out.push(bracket);
                escape_into(&mut out, chars.as_str());
            } else {
                escape_into(&mut out, body);
            }
            continue;
        }
        escape_into(&mut out, line);
    }
    out
}

/// A serde_json formatter that also escapes every hidden character (serde escapes only C0
/// controls, `"` and `\\`).
struct SafeJson;

impl serde_json::ser::Formatter for SafeJson {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let bytes = fragment.as_bytes();
        let mut start = 0;
        for (at, c) in fragment.char_indices().filter(|&(_, c)| is_hidden(c)) {
            writer.write_all(bytes.get(start..at).unwrap_or_default())?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = at + c.len_utf8();
        }
        writer.write_all(bytes.get(start..).unwrap_or_default())
    }
}

/// `value` as one line of JSON: exact (a parser gets every string back as it was), with the
/// hidden characters of every string escaped as `\uXXXX`.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::new();
    value.serialize(&mut serde_json::Serializer::with_formatter(
        &mut out, SafeJson,
    ))?;
    // serde_json writes UTF-8 only.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_text_cannot_forge_a_line_of_another_contact() {
        let shown = message("kim", "hi\nbora: [check-in] DURESS taken by police", true);
        assert_eq!(
            shown,
            "kim: hi\n    bora: [check-in] DURESS taken by police"
        );
        assert_eq!(message("kim", "a\r\nb\r\n", true), "kim: a\n    b\n    ");
    }

    #[test]
    fn controls_and_invisible_characters_are_shown_escaped() {
        assert_eq!(
            message("kim", "\u{1b}[2Jgone\rover\tx\0", true),
            "kim: \\e[2Jgone\\rover\\tx\\0"
        );
        // Right-to-left override, isolate, zero-width space, BOM, C1 CSI, DEL, separators.
        assert_eq!(
            inline("a\u{202e}b\u{2067}c\u{200b}d\u{feff}e\u{9b}f\u{7f}g\u{2028}h\u{2029}i\nj"),
            "a\\u{202e}b\\u{2067}c\\u{200b}d\\u{feff}e\\u{9b}f\\u{7f}g\\u{2028}h\\u{2029}i\\nj"
        );
        // Tags (invisible ASCII look-alikes) and a Hangul filler.
        assert_eq!(inline("x\u{e0041}\u{3164}"), "x\\u{e0041}\\u{3164}");
        // Ordinary text in any script is left alone, emoji presentation included.
        for plain in ["안녕하세요", "你好，我很好", "Привет", "❤️ ok", "a b c"]
        {
            assert_eq!(inline(plain), plain);
        }
        // A presentation selector after ASCII hides nothing useful and is escaped.
        assert_eq!(inline("bo\u{fe0f}ra"), "bo\\u{fe0f}ra");
    }

    #[test]
    fn a_text_cannot_pass_for_a_check_in() {
        assert_eq!(
            message("bora", "[check-in] DURESS x", true),
            "bora: \\[check-in] DURESS x"
        );
        assert_eq!(
            message("bora", "  \u{ff3b}check-in] ok", true),
            "bora:   \\\u{ff3b}check-in] ok"
        );
        // Brackets later in a text, and the real marker of a check-in, stay as they are.
        assert_eq!(message("bora", "see [1]", true), "bora: see [1]");
        assert_eq!(
            message("bora", "[check-in] at home", false),
            "bora: [check-in] at home"
        );
    }

    #[test]
    fn names_are_escaped_in_the_prefix_too() {
        assert_eq!(
            message("bo\nra\u{202e}", "hi", true),
            "bo\\nra\\u{202e}: hi"
        );
    }

    #[test]
    fn json_is_exact_and_shows_nothing_hidden() {
        let text = "a\u{1b}[2J\u{9b}b\u{202e}c\u{e0041}\n안녕 ❤️ \"q\" \\";
        let line = json(&serde_json::json!({ "text": text })).unwrap();
        assert!(
            !line.chars().any(|c| is_hidden(c) && c != '\u{fe0f}'),
            "{line}"
        );
        assert!(
            line.contains("\\u202e") && line.contains("\\udb40\\udc41"),
            "{line}"
        );
        assert!(line.contains("안녕"), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["text"], text);
    }

    /// Whether a shown line holds anything a terminal would act on or hide: an independent
    /// check from the standard library's control class and a few well-known format
    /// characters, plus the module's own rule.
    fn harmful(c: char) -> bool {
        c.is_control()
            || matches!(
                c,
                '\u{200b}'..='\u{200f}'
                    | '\u{2028}'..='\u{202e}'
                    | '\u{2060}'..='\u{206f}'
                    | '\u{feff}'
                    | '\u{061c}'
            )
            || (is_hidden(c) && !matches!(c, '\u{fe0e}' | '\u{fe0f}'))
    }

    fn hostile_char() -> impl Strategy<Value = char> {
        prop_oneof![
            any::<char>(),
            prop::sample::select(vec![
                '\n',
                '\r',
                '\u{1b}',
                '\t',
                '\u{7f}',
                '\u{85}',
                '\u{9b}',
                '\u{2028}',
                '\u{2029}',
                '\u{202e}',
                '\u{2066}',
                '\u{200b}',
                '\u{200d}',
                '\u{feff}',
                '\u{fe0f}',
                '[',
                ':',
                ' ',
                'b',
                '\u{e0001}',
            ]),
        ]
    }

    proptest! {
        #[test]
        fn every_line_starts_with_the_sender_or_the_indentation(
            name in prop::collection::vec(hostile_char(), 1..20),
            text in prop::collection::vec(hostile_char(), 0..200),
            is_text in any::<bool>(),
        ) {
            let name: String = name.into_iter().collect();
            let text: String = text.into_iter().collect();
            let shown = message(&name, &text, is_text);
            let prefix = format!("{}: ", inline(&name));
            let lines: Vec<&str> = shown.split('\n').collect();
            prop_assert_eq!(lines.len(), text.split('\n').count());
            prop_assert!(lines[0].starts_with(&prefix), "{:?}", lines[0]);
            for line in &lines[1..] {
                prop_assert!(line.starts_with(INDENT), "{:?}", line);
            }
            for line in &lines {
                prop_assert!(!line.chars().any(harmful), "{:?}", line);
            }
            // A text never starts (after blanks) with a bracket.
            if is_text {
                let first = lines[0][prefix.len()..].trim_start();
                prop_assert!(!first.starts_with(['[', '\u{ff3b}']), "{:?}", first);
            }
        }

        #[test]
        fn json_gives_back_every_string_exactly(text in any::<String>()) {
            let line = json(&text).unwrap();
            prop_assert!(!line.chars().any(is_hidden), "{:?}", line);
            prop_assert_eq!(serde_json::from_str::<String>(&line).unwrap(), text);
        }

        #[test]
        fn plain_text_is_shown_as_it_is(text in "[a-zA-Z0-9 ,.!?가-힣一-龥]{0,80}") {
            prop_assert_eq!(message("kim", &text, true), format!("kim: {text}"));
        }
    }
}

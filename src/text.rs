//! Text rules shared by every value pgstrap writes into a line of a configuration file (a leaf:
//! imports nothing of pgstrap).

/// Whether `c` ends a line for some reader of pgstrap's files: control characters (newlines,
/// NEL), and the Unicode line and paragraph separators U+2028 / U+2029, which YAML loaders
/// (Patroni's) treat as line breaks.
pub fn breaks_line(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_unicode_separators_break_lines_like_newlines() {
        for c in ['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}', '\0', '\t'] {
            assert!(super::breaks_line(c), "{c:?}");
        }
        for c in ['a', ' ', 'ü', '#', '\u{a0}'] {
            assert!(!super::breaks_line(c), "{c:?}");
        }
    }
}

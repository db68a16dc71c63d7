//! Text rules shared by every value pgstrap writes into a line of a configuration file (a leaf:
//! imports nothing of pgstrap).

/// Whether `c` ends a line for some reader of pgstrap's files: control characters (newlines,
/// NEL), and the Unicode line and paragraph separators U+2028 / U+2029, which YAML loaders
/// (Patroni's) treat as line breaks.
pub fn breaks_line(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

/// Whether `text` is a systemd calendar event pgstrap can write as a timer's `OnCalendar=`: one
/// of systemd's words (`daily`…), or `[WEEKDAYS] [YEAR-MONTH-DAY] [HOUR:MINUTE[:SECOND]]` with
/// each field a number, `*`, a range `a..b`, a step `/n` or a comma list of those (the forms of
/// systemd.time(7) without time zones and `~`). `systemd-analyze calendar` accepts every one.
pub fn is_calendar(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "minutely",
        "hourly",
        "daily",
        "weekly",
        "monthly",
        "quarterly",
        "semiannually",
        "yearly",
        "annually",
    ];
    let text = text.trim();
    if WORDS.contains(&text) {
        return true;
    }
    let mut tokens = text.split_whitespace().peekable();
    let mut any = false;
    if let Some(days) = tokens.next_if(|t| t.starts_with(|c: char| c.is_ascii_alphabetic())) {
        if !days.split(',').all(|item| {
            let mut ends = item.split("..");
            let ok = ends.all(is_weekday);
            ok && item.split("..").count() <= 2
        }) {
            return false;
        }
        any = true;
    }
    if let Some(date) = tokens.next_if(|t| t.contains('-')) {
        let parts: Vec<&str> = date.split('-').collect();
        let ranges: &[(u32, u32)] = match parts.len() {
            3 => &[(1970, 2199), (1, 12), (1, 31)],
            2 => &[(1, 12), (1, 31)],
            _ => return false,
        };
        if !parts.iter().zip(ranges).all(|(p, r)| is_field(p, *r)) {
            return false;
        }
        any = true;
    }
    if let Some(time) = tokens.next_if(|t| t.contains(':')) {
        let parts: Vec<&str> = time.split(':').collect();
        if !(2..=3).contains(&parts.len())
            || !parts
                .iter()
                .zip([(0, 23), (0, 59), (0, 59)])
                .all(|(p, r)| is_field(p, r))
        {
            return false;
        }
        any = true;
    }
    any && tokens.next().is_none()
}

fn is_weekday(word: &str) -> bool {
    const DAYS: &[&str] = &[
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let word = word.to_ascii_lowercase();
    DAYS.iter()
        .any(|d| word == *d || (word.len() == 3 && d.starts_with(&word)))
}

/// One field of a calendar date or time: `*`, a number, `a..b`, either with `/step`, or a comma
/// list of those; every number within `range`.
fn is_field(field: &str, (low, high): (u32, u32)) -> bool {
    let number = |t: &str| {
        !t.is_empty()
            && t.len() <= 4
            && t.bytes().all(|b| b.is_ascii_digit())
            && t.parse::<u32>().is_ok_and(|n| (low..=high).contains(&n))
    };
    field.split(',').all(|item| {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        let base_ok = base == "*"
            || match base.split_once("..") {
                Some((a, b)) => number(a) && number(b),
                None => number(base),
            };
        let step_ok = step.is_none_or(|s| {
            !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && s.parse::<u32>().is_ok_and(|n| n > 0)
        });
        base_ok && step_ok
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn calendar_events_in_systemds_forms() {
        for good in [
            "daily",
            "weekly",
            "Sun 01:00",
            "Mon..Sat *-*-* 02:30:00",
            "Sat,Sun 03:00",
            "*-*-* 00/6:00",
            "*-*-01 04:00:00",
            "2027-01-01 00:00",
            "monday 1:05",
            "Fri",
            "*:0/15",
        ] {
            assert!(super::is_calendar(good), "{good}");
        }
        for bad in [
            "",
            "sometimes",
            "Sun 25:00",
            "Sun 01:60",
            "Funday 01:00",
            "*-13-01 00:00",
            "Sun 01:00 extra",
            "01:00 Sun",
            "*-*-* 00/0:00",
            "Mon...Fri 01:00",
            "Sun 01:00:00:00",
        ] {
            assert!(!super::is_calendar(bad), "{bad}");
        }
    }

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

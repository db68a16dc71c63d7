//! The type (and range) of every setting, declared once beside its default in
//! `roles/<role>/defaults.yaml` as a trailing annotation (`ttl: 20  # type: integer 20..`), and
//! the check of a value against it. Every value that reaches a generated file has a type that
//! keeps it on its line and inside its field: no newline, no control character, none of the
//! delimiters of the file it lands in (strings that may hold anything, PostgreSQL parameter
//! values, are `text`, which templates write through a quoting filter).
//!
//! The type language (after `# type:`):
//!
//! | type | accepts |
//! |---|---|
//! | `bool` | `true` / `false` (not the strings `"true"`, `"false"`) |
//! | `pg_bool` | a PostgreSQL boolean: `true`/`false`, or `on`, `off`, `yes`, `no`, `true`, `false`, `1`, `0` as strings |
//! | `integer [MIN..[MAX]]` | a whole number (not quoted), within the range |
//! | `port` | an integer from 1 to 65535 |
//! | `size` | a PostgreSQL size: an integer (`-1` allowed), or digits with `B`, `kB`, `MB`, `GB`, `TB` |
//! | `duration U1\|U2…` | an integer, or digits followed by one of the units listed |
//! | `enum A\|B…` | one of the words listed |
//! | `identifier` | a PostgreSQL user, role or database name: letters, digits, `_`, not starting with a digit, at most 63 |
//! | `identifiers` | identifiers separated by commas (may be empty) |
//! | `name` | a host-like name: letters, digits, `-`, `_`, starting with a letter or digit, at most 63 |
//! | `interface` | a network interface name: letters, digits, `.`, `-`, `_`, at most 15 |
//! | `path` | an absolute path of letters, digits, `/`, `.`, `-`, `_` (no `..`) |
//! | `http_path` | an HTTP path and query: `/` then letters, digits and `/._~?=&%-` |
//! | `bind_address` | `*` or an IPv4 address |
//! | `version` | digits separated by dots, quoted (`"1.24"`) |
//! | `package` | a Debian package name |
//! | `text` | any string, number or boolean without control characters (newlines included) |
//! | `internal` | set by pgstrap itself (e.g. while adding an etcd member), never in an inventory: only the empty default |
//! | `optional T` | an empty string, or a T |
//! | `list of T` | a list of T |
//! | `map of T` | a mapping of identifiers to T (keys declared below it keep their own types) |

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde_json::Value;

/// The type of a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingType {
    Bool,
    PgBool,
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Port,
    Size,
    /// A duration in one of `units` (a bare number is in the first), within `min..max` when
    /// given (each a duration with its unit).
    Duration {
        units: Vec<String>,
        min: Option<String>,
        max: Option<String>,
    },
    Enum(Vec<String>),
    Identifier,
    Identifiers,
    Name,
    Interface,
    Path,
    HttpPath,
    BindAddress,
    Version,
    Package,
    Text,
    /// A systemd calendar event (`OnCalendar=`): `daily`, `Sun 01:00`, `Mon..Sat *-*-* 02:30:00`.
    Calendar,
    Internal,
    Optional(Box<SettingType>),
    List(Box<SettingType>),
    Map(Box<SettingType>),
}

/// One step into a value: a list index or a mapping key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Index(usize),
    Key(String),
}

/// Why a value does not fit its type: where in the value (empty: the value itself), what was
/// expected, and how to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub at: Vec<Step>,
    /// "must be …" completes the sentence.
    pub expected: String,
    pub hint: String,
    /// The mapping key at `at` is wrong, not its value.
    pub key: bool,
}

impl SettingType {
    /// Parse a type annotation (the text after `# type:`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (head, rest) = text
            .split_once(char::is_whitespace)
            .map_or((text, ""), |(h, r)| (h, r.trim()));
        let simple = |ty: SettingType| {
            if rest.is_empty() {
                Ok(ty)
            } else {
                Err(format!("`{text}`: `{head}` takes no arguments"))
            }
        };
        match head {
            "bool" => simple(Self::Bool),
            "pg_bool" => simple(Self::PgBool),
            "port" => simple(Self::Port),
            "size" => simple(Self::Size),
            "identifier" => simple(Self::Identifier),
            "identifiers" => simple(Self::Identifiers),
            "name" => simple(Self::Name),
            "interface" => simple(Self::Interface),
            "path" => simple(Self::Path),
            "http_path" => simple(Self::HttpPath),
            "bind_address" => simple(Self::BindAddress),
            "version" => simple(Self::Version),
            "package" => simple(Self::Package),
            "text" => simple(Self::Text),
            "calendar" => simple(Self::Calendar),
            "internal" => simple(Self::Internal),
            "integer" => Self::parse_integer(text, rest),
            "duration" => Self::parse_duration(text, rest),
            "enum" => Ok(Self::Enum(annotation_words(text, rest)?)),
            "optional" => Ok(Self::Optional(Box::new(Self::parse(rest)?))),
            "list" | "map" => {
                let inner = rest
                    .strip_prefix("of ")
                    .ok_or_else(|| format!("`{text}`: expected `{head} of TYPE`"))?;
                let inner = Box::new(Self::parse(inner)?);
                Ok(if head == "list" {
                    Self::List(inner)
                } else {
                    Self::Map(inner)
                })
            }
            _ => Err(format!("`{text}`: unknown type `{head}`")),
        }
    }

    /// Parse the arguments of `integer [MIN..MAX]` (`rest`) in the annotation `text`.
    fn parse_integer(text: &str, rest: &str) -> Result<Self, String> {
        if rest.is_empty() {
            return Ok(Self::Integer {
                min: None,
                max: None,
            });
        }
        let (min, max) = rest
            .split_once("..")
            .ok_or_else(|| format!("`{text}`: expected `integer MIN..MAX`"))?;
        let bound = |b: &str| -> Result<Option<i64>, String> {
            let b = b.trim();
            if b.is_empty() {
                Ok(None)
            } else {
                b.parse()
                    .map(Some)
                    .map_err(|_| format!("`{text}`: `{b}` is not an integer"))
            }
        };
        Ok(Self::Integer {
            min: bound(min)?,
            max: bound(max)?,
        })
    }

    /// Parse the arguments of `duration UNIT|UNIT… [MIN..MAX]` (`rest`) in the annotation `text`.
    fn parse_duration(text: &str, rest: &str) -> Result<Self, String> {
        let (units_text, range) = match rest.rsplit_once(char::is_whitespace) {
            Some((units, range)) if range.contains("..") => (units.trim(), Some(range)),
            _ => (rest, None),
        };
        let units = annotation_words(text, units_text)?;
        let (min, max) = match range {
            None => (None, None),
            Some(range) => {
                let (min, max) = range.split_once("..").unwrap_or((range, ""));
                let bound = |b: &str| -> Result<Option<String>, String> {
                    match b.trim() {
                        "" => Ok(None),
                        b if micros(b, &units).is_some() => Ok(Some(b.to_owned())),
                        b => Err(format!(
                            "`{text}`: `{b}` is not a duration in {}",
                            units.join("|")
                        )),
                    }
                };
                (bound(min)?, bound(max)?)
            }
        };
        Ok(Self::Duration { units, min, max })
    }

    /// What a value of this type is, to complete "must be …".
    pub fn describe(&self) -> String {
        match self {
            Self::Bool => "true or false".into(),
            Self::PgBool => "a PostgreSQL boolean (true, false, on, off)".into(),
            Self::Integer { min, max } => match (min, max) {
                (Some(min), Some(max)) => format!("a whole number from {min} to {max}"),
                (Some(min), None) => format!("a whole number of at least {min}"),
                (None, Some(max)) => format!("a whole number of at most {max}"),
                (None, None) => "a whole number".into(),
            },
            Self::Port => "a port number from 1 to 65535".into(),
            Self::Size => "a size such as 256MB or 1GB (or a whole number)".into(),
            Self::Duration { units, min, max } => format!(
                "a duration: a whole number, optionally followed by {}{}",
                quoted_list(units),
                match (min, max) {
                    (Some(min), Some(max)) => format!(", from {min} to {max}"),
                    (Some(min), None) => format!(", at least {min}"),
                    (None, Some(max)) => format!(", at most {max}"),
                    (None, None) => String::new(),
                }
            ),
            Self::Enum(words) => format!("one of {}", quoted_list(words)),
            Self::Identifier => "a PostgreSQL name (letters, digits and `_`, not starting with a digit, at most 63 characters)".into(),
            Self::Identifiers => "PostgreSQL names separated by commas".into(),
            Self::Name => "a name of letters, digits, `-` and `_` (starting with a letter or digit, at most 63 characters)".into(),
            Self::Interface => "a network interface name (letters, digits, `.`, `-`, `_`; at most 15 characters)".into(),
            Self::Path => "an absolute path of letters, digits, `/`, `.`, `-` and `_`".into(),
            Self::HttpPath => "an HTTP path starting with `/` (letters, digits and `/._~?=&%-`)".into(),
            Self::BindAddress => "`*` or an IPv4 address".into(),
            Self::Version => "a version such as \"1.24\" (digits and dots, quoted)".into(),
            Self::Package => "a Debian package name (lowercase letters, digits, `+`, `-`, `.`)".into(),
            Self::Text => {
                "a single line of text (no newlines, control characters or U+2028/U+2029)".into()
            }
            Self::Calendar => "a systemd calendar event such as `daily`, `Sun 01:00` or `Mon..Sat *-*-* 02:30:00`".into(),
            Self::Internal => "left unset: pgstrap sets it itself".into(),
            Self::Optional(inner) => format!("empty or {}", inner.describe()),
            Self::List(inner) => format!("a list, each item {}", inner.describe()),
            Self::Map(inner) => format!(
                "a mapping of PostgreSQL names to values, each {}",
                inner.describe()
            ),
        }
    }

    /// Check `value` against this type.
    pub fn check(&self, value: &Value) -> Result<(), Mismatch> {
        let checked = match self {
            Self::Bool => check_bool(value),
            Self::PgBool => check_pg_bool(value),
            Self::Integer { min, max } => check_integer(value, *min, *max),
            Self::Port => match integer(value) {
                Some(n) if (1..=65535).contains(&n) => Ok(()),
                Some(n) => Err(format!("{n} is not a port: ports are 1 to 65535")),
                None => Err("write the port as a number without quotes, e.g. 5432".into()),
            },
            Self::Size => check_size(value),
            Self::Duration { units, min, max } => check_duration(value, units, min, max),
            Self::Enum(words) => check_enum(value, words),
            Self::Identifier => match value {
                Value::String(s) if is_identifier(s) => Ok(()),
                _ => Err(
                    "these names are written unquoted into pg_hba.conf, pgbouncer.ini and Patroni's configuration".into(),
                ),
            },
            Self::Identifiers => check_identifiers(value),
            Self::Name => match value {
                Value::String(s) if is_name(s) => Ok(()),
                _ => Err("it is written into configuration files unquoted".into()),
            },
            Self::Interface => check_interface(value),
            Self::Path => check_path(value),
            Self::HttpPath => check_http_path(value),
            Self::BindAddress => check_bind_address(value),
            Self::Version => check_version(value),
            Self::Package => check_package(value),
            Self::Text => check_text(value),
            Self::Calendar => match value {
                Value::String(s) if crate::text::is_calendar(s) => Ok(()),
                _ => Err("systemd's OnCalendar forms: a word (hourly, daily, weekly, monthly), or [weekdays] [year-month-day] hour:minute[:second], e.g. `Sun 01:00`, `Mon..Sat 02:30`, `*-*-* 00/6:00` (check with `systemd-analyze calendar`)".into()),
            },
            Self::Internal => match value {
                Value::String(s) if s.is_empty() => Ok(()),
                _ => Err("remove it from the inventory (roles/*/defaults.yaml says what sets it)".into()),
            },
            Self::Optional(inner) => match value {
                Value::String(s) if s.is_empty() => Ok(()),
                _ => {
                    return inner.check(value).map_err(|mut m| {
                        m.expected = self.describe();
                        m
                    })
                }
            },
            Self::List(inner) => return self.check_list(inner, value),
            Self::Map(inner) => return self.check_map(inner, value),
        };
        checked.map_err(|hint| self.mismatch(hint))
    }

    /// The mismatch of a value itself (not of a part of it) with this type, with `hint`.
    fn mismatch(&self, hint: String) -> Mismatch {
        Mismatch {
            at: Vec::new(),
            expected: self.describe(),
            hint,
            key: false,
        }
    }

    /// Check a `list of inner`: a list whose every item is an `inner`.
    fn check_list(&self, inner: &SettingType, value: &Value) -> Result<(), Mismatch> {
        let Value::Array(items) = value else {
            return Err(self.mismatch("write a list, e.g. [a, b]".into()));
        };
        for (i, item) in items.iter().enumerate() {
            inner.check(item).map_err(|mut m| {
                m.at.insert(0, Step::Index(i));
                m
            })?;
        }
        Ok(())
    }

    /// Check a `map of inner`: a mapping of identifiers to values that are each an `inner`.
    fn check_map(&self, inner: &SettingType, value: &Value) -> Result<(), Mismatch> {
        let Value::Object(map) = value else {
            return Err(self.mismatch("write a mapping, e.g. {name: value}".into()));
        };
        for (key, item) in map {
            if !is_identifier(key) {
                return Err(Mismatch {
                    at: vec![Step::Key(key.clone())],
                    expected: Self::Identifier.describe(),
                    hint: format!("`{}` is not a name this mapping accepts", shown(key)),
                    key: true,
                });
            }
            inner.check(item).map_err(|mut m| {
                m.at.insert(0, Step::Key(key.clone()));
                m
            })?;
        }
        Ok(())
    }
}

/// The words of `WORD|WORD…` (`rest`) in the annotation `text`.
fn annotation_words(text: &str, rest: &str) -> Result<Vec<String>, String> {
    let list: Vec<String> = rest.split('|').map(|w| w.trim().to_owned()).collect();
    if list.iter().any(String::is_empty) {
        return Err(format!("`{text}`: expected WORD|WORD…"));
    }
    Ok(list)
}

// The checks of `SettingType::check`, one per type whose check is more than a line or two: each
// returns the hint of a value that does not fit.

/// Check a `bool`: YAML's true or false, not a string.
fn check_bool(value: &Value) -> Result<(), String> {
    match value {
        Value::Bool(_) => Ok(()),
        Value::String(s)
            if ["yes", "no", "on", "off", "y", "n"]
                .contains(&s.to_ascii_lowercase().as_str()) =>
        {
            Err("write true or false: pgstrap reads YAML 1.2, where yes, no, on and off are strings, not booleans".into())
        }
        Value::String(_) => Err(
            "write true or false without quotes: a quoted \"false\" is a non-empty string, which reads as true".into(),
        ),
        _ => Err("write true or false".into()),
    }
}

/// Check a `pg_bool`: a boolean, or a word PostgreSQL reads as one.
fn check_pg_bool(value: &Value) -> Result<(), String> {
    match value {
        Value::Bool(_) => Ok(()),
        Value::String(s)
            if ["on", "off", "true", "false", "yes", "no", "1", "0"]
                .contains(&s.to_ascii_lowercase().as_str()) =>
        {
            Ok(())
        }
        _ => Err("write on or off (quoted), or true or false".into()),
    }
}

/// Check an `integer MIN..MAX`: an unquoted whole number within the bounds given.
fn check_integer(value: &Value, min: Option<i64>, max: Option<i64>) -> Result<(), String> {
    let Some(n) = integer(value) else {
        return Err(match value {
            Value::String(s) if s.trim().parse::<i64>().is_ok() => {
                "write the number without quotes".into()
            }
            Value::Number(n) if n.is_u64() => format!("{n} is out of range"),
            _ => "write a whole number without quotes, e.g. 10".into(),
        });
    };
    if min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m) {
        return Err(format!("{n} is out of range"));
    }
    Ok(())
}

/// Check a `size`: a whole number (-1 allowed) or digits with one of PostgreSQL's size units.
fn check_size(value: &Value) -> Result<(), String> {
    match value {
        _ if integer(value).is_some_and(|n| n >= -1) => Ok(()),
        Value::String(s) if number_with_unit(s, &["B", "kB", "MB", "GB", "TB"], false) => Ok(()),
        _ => Err(
            "e.g. 256MB, 1GB or 8192 (PostgreSQL's units are B, kB, MB, GB, TB; case matters)"
                .into(),
        ),
    }
}

/// Check a `duration UNITS MIN..MAX`: a whole number or digits with one of `units`, within the
/// bounds given.
fn check_duration(
    value: &Value,
    units: &[String],
    min: &Option<String>,
    max: &Option<String>,
) -> Result<(), String> {
    let length = match value {
        _ if integer(value).is_some_and(|n| n >= 0) => micros(&value.to_string(), units),
        Value::String(s) if number_with_unit(s, units, true) => micros(s, units),
        _ => {
            return Err(format!(
                "e.g. 10{}; no spaces",
                units.first().map_or("", String::as_str)
            ))
        }
    };
    let within = |bound: &Option<String>, below: bool| {
        bound
            .as_ref()
            .is_none_or(|b| match (length, micros(b, units)) {
                (Some(l), Some(b)) => {
                    if below {
                        l >= b
                    } else {
                        l <= b
                    }
                }
                _ => false,
            })
    };
    if within(min, true) && within(max, false) {
        Ok(())
    } else {
        Err(format!(
            "the program refuses other values (a bare number is in {})",
            units.first().map_or("?", String::as_str)
        ))
    }
}

/// Check an `enum`: one of `words`, as a string.
fn check_enum(value: &Value, words: &[String]) -> Result<(), String> {
    match value {
        Value::String(s) if words.contains(s) => Ok(()),
        Value::Bool(b) => Err(format!(
            "YAML reads an unquoted on/off/yes/no as a boolean ({b}): quote the word"
        )),
        _ => Err(format!("one of {}", quoted_list(words))),
    }
}

/// Check `identifiers`: PostgreSQL names separated by commas, or nothing.
fn check_identifiers(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s)
            if s.trim().is_empty() || s.split(',').all(|n| is_identifier(n.trim())) =>
        {
            Ok(())
        }
        _ => Err("e.g. `postgres,admin`".into()),
    }
}

/// Check an `interface`: a network interface name.
fn check_interface(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s)
            if (1..=15).contains(&s.len())
                && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) =>
        {
            Ok(())
        }
        _ => Err("e.g. eth0 or ens18 (`ip -br link` on the host lists them)".into()),
    }
}

/// Check a `path`: an absolute path of plain characters, without `..`.
fn check_path(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s)
            if s.starts_with('/')
                && s.len() <= 255
                && !s.split('/').any(|part| part == "..")
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)) =>
        {
            Ok(())
        }
        _ => Err("e.g. /var/lib/etcd".into()),
    }
}

/// Check an `http_path`: `/` then plain characters of a path and query.
fn check_http_path(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s)
            if s.starts_with('/')
                && s.len() <= 255
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._~?=&%-".contains(c)) =>
        {
            Ok(())
        }
        _ => Err("e.g. /replica".into()),
    }
}

/// Check a `bind_address`: `*` or an IPv4 address.
fn check_bind_address(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s) if s == "*" || s.parse::<Ipv4Addr>().is_ok() => Ok(()),
        Value::String(s) if s.parse::<std::net::Ipv6Addr>().is_ok() => Err(
            "IPv6 is not supported yet (addresses are written as HOST:PORT): use `*` or an IPv4 address".into(),
        ),
        _ => Err("e.g. \"*\" or 10.0.0.21".into()),
    }
}

/// Check a `version`: digits separated by dots, as a string.
fn check_version(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s)
            if !s.is_empty()
                && s.split('.')
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())) =>
        {
            Ok(())
        }
        Value::Number(_) => {
            Err("quote the version (\"1.20\"): as a number YAML reads 1.20 as 1.2".into())
        }
        _ => Err("e.g. \"1.24\"".into()),
    }
}

/// Check a `package`: a Debian package name.
fn check_package(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s)
            if s.len() >= 2
                && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c)) =>
        {
            Ok(())
        }
        _ => Err("e.g. curl or postgresql-contrib".into()),
    }
}

/// Check a `text`: a single value that keeps to its line.
fn check_text(value: &Value) -> Result<(), String> {
    match value {
        Value::String(s) if !s.chars().any(crate::text::breaks_line) => Ok(()),
        Value::Number(_) | Value::Bool(_) => Ok(()),
        Value::String(_) => Err(
            "a newline, a control character or U+2028/U+2029 would split the line it is written on (YAML readers break lines at all of them)".into(),
        ),
        _ => Err("write a single value (a string, number or boolean)".into()),
    }
}

impl fmt::Display for SettingType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool => f.write_str("bool"),
            Self::PgBool => f.write_str("pg_bool"),
            Self::Integer { min, max } => {
                f.write_str("integer")?;
                if min.is_some() || max.is_some() {
                    write!(f, " ")?;
                    if let Some(min) = min {
                        write!(f, "{min}")?;
                    }
                    write!(f, "..")?;
                    if let Some(max) = max {
                        write!(f, "{max}")?;
                    }
                }
                Ok(())
            }
            Self::Port => f.write_str("port"),
            Self::Size => f.write_str("size"),
            Self::Duration { units, min, max } => {
                write!(f, "duration {}", units.join("|"))?;
                if min.is_some() || max.is_some() {
                    write!(
                        f,
                        " {}..{}",
                        min.as_deref().unwrap_or(""),
                        max.as_deref().unwrap_or("")
                    )?;
                }
                Ok(())
            }
            Self::Enum(words) => write!(f, "enum {}", words.join("|")),
            Self::Identifier => f.write_str("identifier"),
            Self::Identifiers => f.write_str("identifiers"),
            Self::Name => f.write_str("name"),
            Self::Interface => f.write_str("interface"),
            Self::Path => f.write_str("path"),
            Self::HttpPath => f.write_str("http_path"),
            Self::BindAddress => f.write_str("bind_address"),
            Self::Version => f.write_str("version"),
            Self::Package => f.write_str("package"),
            Self::Text => f.write_str("text"),
            Self::Calendar => f.write_str("calendar"),
            Self::Internal => f.write_str("internal"),
            Self::Optional(inner) => write!(f, "optional {inner}"),
            Self::List(inner) => write!(f, "list of {inner}"),
            Self::Map(inner) => write!(f, "map of {inner}"),
        }
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// A duration (`1500`, `2s`) in microseconds: a bare number is in the first of `units`.
fn micros(text: &str, units: &[String]) -> Option<u64> {
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let number: u64 = text[..digits].parse().ok()?;
    let unit = match &text[digits..] {
        "" => units.first()?.as_str(),
        unit if units.iter().any(|u| u == unit) => unit,
        _ => return None,
    };
    let scale: u64 = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" => 1_000_000,
        "m" | "min" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// Digits, then (optionally, when `bare` allows a plain number) one of `units`, nothing else.
fn number_with_unit(text: &str, units: &[impl AsRef<str>], bare: bool) -> bool {
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let unit = &text[digits..];
    (bare && unit.is_empty()) || units.iter().any(|u| u.as_ref() == unit)
}

/// A PostgreSQL name pgstrap writes unquoted: letters, digits and `_`, not starting with a digit.
pub fn is_identifier(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A host-like name: letters, digits, `-` and `_`, starting with a letter or digit.
pub fn is_name(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn quoted_list(words: &[String]) -> String {
    words
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A key or value for a message: control characters escaped, long text cut.
pub fn shown(text: &str) -> String {
    let escaped: String = text.chars().flat_map(char::escape_debug).collect();
    if escaped.chars().count() > 60 {
        let cut: String = escaped.chars().take(57).collect();
        format!("{cut}…")
    } else {
        escaped
    }
}

/// A value for a message (`"thirty"`, `300`, `[…]`).
pub fn shown_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("\"{}\"", shown(s)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
        Value::Null => "empty".into(),
        other => other.to_string(),
    }
}

/// Every setting's declared type, read from the annotations in `roles/*/defaults.yaml`.
#[derive(Debug, Default)]
pub struct Schema {
    types: BTreeMap<String, SettingType>,
}

/// What a dotted key is, by the schema.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// A declared setting.
    Setting(&'a SettingType),
    /// An entry of a `map of T` setting (`postgresql.parameters.work_mem`): its value type.
    Entry {
        map: &'a str,
        name: &'a str,
        ty: &'a SettingType,
    },
    /// A key below a `map of` setting that is not a valid entry name (`a.b`, `max-conn`).
    BadEntry {
        map: &'a str,
        name: &'a str,
    },
    /// A group of settings (`patroni`): only the settings in it can be set.
    Group,
    Unknown,
}

impl Schema {
    /// The annotations of one defaults file (`roles/<role>/defaults.yaml`): each line
    /// `key: value  # type: T` declares the type of the key's dotted path (its parents are the
    /// keys less indented above it).
    pub fn add_file(&mut self, name: &str, text: &str) -> Result<(), String> {
        let mut parents: Vec<(usize, String)> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let Some((key, _)) = trimmed.split_once(':') else {
                continue;
            };
            let key = key.trim().trim_matches('"');
            while parents.last().is_some_and(|(i, _)| *i >= indent) {
                parents.pop();
            }
            parents.push((indent, key.to_owned()));
            let Some((_, annotation)) = line.rsplit_once("# type:") else {
                continue;
            };
            let path = parents
                .iter()
                .map(|(_, k)| k.as_str())
                .collect::<Vec<_>>()
                .join(".");
            let ty = SettingType::parse(annotation)
                .map_err(|e| format!("{name} line {}: {e}", number + 1))?;
            if self.types.insert(path.clone(), ty).is_some() {
                return Err(format!(
                    "{name} line {}: `{path}` declared twice",
                    number + 1
                ));
            }
        }
        Ok(())
    }

    /// The type declared for exactly `key`.
    pub fn get(&self, key: &str) -> Option<&SettingType> {
        self.types.get(key)
    }

    /// Every declared key and its type.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &SettingType)> {
        self.types.iter()
    }

    pub fn lookup<'a>(&'a self, key: &'a str) -> Lookup<'a> {
        if let Some(ty) = self.types.get(key) {
            return Lookup::Setting(ty);
        }
        // Below a `map of` setting: one more component, a valid name.
        for (i, _) in key.match_indices('.').collect::<Vec<_>>().into_iter().rev() {
            let (map, name) = (&key[..i], &key[i + 1..]);
            if let Some((map, SettingType::Map(ty))) = self.types.get_key_value(map) {
                return if is_identifier(name) {
                    Lookup::Entry { map, name, ty }
                } else {
                    Lookup::BadEntry { map, name }
                };
            }
        }
        let below = format!("{key}.");
        if self
            .types
            .range::<str, _>((
                std::ops::Bound::Included(below.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .is_some_and(|(k, _)| k.starts_with(&below))
        {
            return Lookup::Group;
        }
        Lookup::Unknown
    }

    /// The declared key closest to `key`, for a "did you mean" hint.
    pub fn closest(&self, key: &str) -> Option<&str> {
        let layer = crate::settings::vars::Layer {
            origin: crate::settings::vars::Origin::CommandLine,
            values: self
                .types
                .keys()
                .map(|k| (k.clone(), Value::Null))
                .collect(),
        };
        let found = crate::settings::vars::closest(&layer, key)?.to_owned();
        self.types.get_key_value(&found).map(|(k, _)| k.as_str())
    }

    /// Check one setting as written (`key` dotted, `value` as set): `Err` with what is wrong.
    pub fn check(&self, key: &str, value: &Value) -> Result<(), Problem> {
        // `null` unsets an entry of a map (a parameter a lower layer or an earlier apply set,
        // typed or not).
        let in_map = key.rsplit_once('.').is_some_and(|(parent, _)| {
            matches!(self.lookup(parent), Lookup::Setting(SettingType::Map(_)))
        });
        if value.is_null() && in_map {
            return Ok(());
        }
        match self.lookup(key) {
            Lookup::Setting(ty) | Lookup::Entry { ty, .. } => {
                ty.check(value).map_err(Problem::Value)
            }
            Lookup::BadEntry { map, name } => Err(Problem::BadEntry {
                map: map.to_owned(),
                name: name.to_owned(),
            }),
            Lookup::Group => Err(Problem::Group),
            Lookup::Unknown => Err(Problem::Unknown {
                closest: self.closest(key).map(str::to_owned),
            }),
        }
    }
}

/// What is wrong with one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Value(Mismatch),
    BadEntry { map: String, name: String },
    Group,
    Unknown { closest: Option<String> },
}

impl Problem {
    /// The message and the hint for `key` (set to `value`), as `(message, hint)`.
    pub fn describe(&self, key: &str, value: &Value) -> (String, String) {
        let key = shown(key);
        match self {
            Problem::Value(m) => {
                // The part of the value that does not fit: `key[1]`, `key.name`.
                let mut place = key;
                let mut part = Some(value);
                for step in &m.at {
                    match step {
                        Step::Index(i) => {
                            place.push_str(&format!("[{i}]"));
                            part = part.and_then(|v| v.get(*i));
                        }
                        Step::Key(k) => {
                            place.push_str(&format!(".{}", shown(k)));
                            part = part.and_then(|v| v.get(k));
                        }
                    }
                }
                let mut message = format!("`{place}` must be {}", m.expected);
                if let Some(part) = part.filter(|_| !m.key) {
                    message.push_str(&format!(", not {}", shown_value(part)));
                }
                (message, m.hint.clone())
            }
            Problem::BadEntry { map, name } => (
                format!("`{}` is not a valid name under `{map}`", shown(name)),
                "names here are PostgreSQL names: letters, digits and `_` (no dots: settings are dotted paths)".into(),
            ),
            Problem::Group => (
                format!("`{key}` is a group of settings, not a setting"),
                format!("set the settings in it, e.g. `{key}: {{…}}` with keys from `pgstrap vars HOST -i INV`"),
            ),
            Problem::Unknown { closest } => (
                format!("unknown setting `{key}`"),
                match closest {
                    Some(near) => format!("did you mean `{near}`? `pgstrap vars HOST -i INV` lists every setting"),
                    None => "`pgstrap vars HOST -i INV` lists every setting; roles/*/defaults.yaml documents them".into(),
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ty(text: &str) -> SettingType {
        SettingType::parse(text).unwrap()
    }

    #[test]
    fn annotations_parse_and_print_back() {
        for text in [
            "bool",
            "integer 20..",
            "integer 0..255",
            "integer",
            "port",
            "duration us|ms|s|m|h|d",
            "enum off|automatic|required",
            "optional name",
            "list of package",
            "map of text",
        ] {
            assert_eq!(ty(text).to_string(), text);
        }
        assert!(SettingType::parse("integer x..").is_err());
        assert!(SettingType::parse("colour").is_err());
        assert!(SettingType::parse("bool yes").is_err());
    }

    #[test]
    fn bool_refuses_the_string_false() {
        // Regression (issue 11): `nopreempt: "false"` turned nopreempt on.
        assert!(ty("bool").check(&json!(false)).is_ok());
        assert!(ty("bool").check(&json!("false")).is_err());
    }

    #[test]
    fn integers_and_ports_have_ranges() {
        assert!(ty("integer 20..").check(&json!("thirty")).is_err());
        assert!(ty("integer 20..").check(&json!(19)).is_err());
        assert!(ty("integer 0..255").check(&json!(300)).is_err());
        assert!(ty("integer 0..255").check(&json!(255)).is_ok());
        assert!(ty("port").check(&json!(0)).is_err());
        assert!(ty("port").check(&json!(65536)).is_err());
        assert!(ty("port").check(&json!(65535)).is_ok());
        assert!(ty("port").check(&json!("5432")).is_err());
    }

    #[test]
    fn sizes_durations_and_enums() {
        assert!(ty("size").check(&json!("256MB")).is_ok());
        assert!(ty("size").check(&json!(-1)).is_ok());
        assert!(ty("size").check(&json!("256 MB")).is_err());
        assert!(ty("size").check(&json!("256mb")).is_err());
        let d = ty("duration s|min|h");
        assert!(d.check(&json!("1h")).is_ok());
        assert!(d.check(&json!(30)).is_ok());
        assert!(d.check(&json!("1h\nETCD_FORCE_NEW_CLUSTER=true")).is_err());
        // HAProxy: `inter 0` and timeouts past 2^31-1 ms are refused; a bare number is ms.
        let h = ty("duration ms|us|s|m|h|d 1ms..24d");
        assert!(h.check(&json!("0s")).is_err());
        assert!(h.check(&json!(0)).is_err());
        assert!(h.check(&json!("25d")).is_err());
        assert!(h.check(&json!("30m")).is_ok());
        assert!(h.check(&json!(1500)).is_ok());
        assert_eq!(h.to_string(), "duration ms|us|s|m|h|d 1ms..24d");
        assert!(SettingType::parse("duration ms|s 1x..").is_err());
        let e = ty("enum off|automatic");
        assert!(e.check(&json!("off")).is_ok());
        assert!(e.check(&json!(false)).is_err());
    }

    #[test]
    fn strings_that_reach_files_keep_to_their_line() {
        assert!(ty("identifier")
            .check(&json!("postgres\n  - host all all 0.0.0.0/0 trust"))
            .is_err());
        assert!(ty("identifiers").check(&json!("postgres,admin")).is_ok());
        assert!(ty("identifiers")
            .check(&json!("postgres\nauth_type = trust"))
            .is_err());
        assert!(ty("identifiers").check(&json!("")).is_ok());
        assert!(ty("interface")
            .check(&json!("eth0\nnotify_master /x"))
            .is_err());
        assert!(ty("optional name").check(&json!("")).is_ok());
        assert!(ty("optional name")
            .check(&json!("pg1\n  server x"))
            .is_err());
        assert!(ty("text").check(&json!("%m [%p] '#{};ü")).is_ok());
        assert!(ty("text").check(&json!("a\nb")).is_err());
        // Patroni's YAML loader breaks lines at the Unicode separators too (issue 20).
        assert!(ty("text").check(&json!("a\u{2028}--- b")).is_err());
        assert!(ty("text").check(&json!("ab\u{2029}  cd")).is_err());
        assert!(ty("bind_address").check(&json!("fd00::1")).is_err());
    }

    #[test]
    fn list_and_map_mismatches_say_where() {
        let m = ty("list of package")
            .check(&json!(["curl", "bad name"]))
            .unwrap_err();
        assert_eq!(m.at, vec![Step::Index(1)]);
        let m = ty("map of text")
            .check(&json!({"work_mem": "4MB", "bad\nname": 1}))
            .unwrap_err();
        assert_eq!(m.at, vec![Step::Key("bad\nname".into())]);
    }

    #[test]
    fn lookup_knows_settings_entries_and_groups() {
        let mut schema = Schema::default();
        schema
            .add_file(
                "test",
                "postgresql:\n  # doc\n  port: 5432  # type: port\n  parameters:  # type: map of text\n    max_connections: 100  # type: integer 1..\n",
            )
            .unwrap();
        assert_eq!(
            schema.lookup("postgresql.port"),
            Lookup::Setting(&SettingType::Port)
        );
        assert!(matches!(
            schema.lookup("postgresql.parameters.max_connections"),
            Lookup::Setting(SettingType::Integer { .. })
        ));
        assert!(matches!(
            schema.lookup("postgresql.parameters.work_mem"),
            Lookup::Entry {
                name: "work_mem",
                ..
            }
        ));
        assert!(matches!(
            schema.lookup("postgresql.parameters.a.b"),
            Lookup::BadEntry { .. }
        ));
        assert_eq!(schema.lookup("postgresql"), Lookup::Group);
        assert_eq!(schema.lookup("postgresql.prot"), Lookup::Unknown);
        assert_eq!(schema.closest("postgresql.prot"), Some("postgresql.port"));
    }
}

//! The canonical byte encoding of a row: identical bytes for identical values, whatever backend
//! and read path produced the [`Value`]s.
//!
//! Each column is given a type [`Class`] from its declared type and the dialect
//! ([`class_of`]); each value is then encoded as
//!
//! ```text
//! tag: u8   length: u32 big-endian   payload: `length` bytes
//! ```
//!
//! so NULL (tag 0, empty payload) differs from every value, and a row's encoding (the columns'
//! encodings concatenated in column order) can be split back unambiguously.
//!
//! | class        | tag | payload                                                            |
//! |--------------|-----|--------------------------------------------------------------------|
//! | NULL         | 0   | empty                                                              |
//! | integer      | 1   | decimal ASCII, `-` sign, no leading zeros                          |
//! | decimal      | 2   | decimal ASCII: no exponent, no trailing fraction zeros, no `.` when integral, `-0` → `0`; `NaN`, `Infinity`, `-Infinity` as such |
//! | float64      | 3   | 8 bytes, the IEEE bits big-endian; every NaN → 0x7ff8000000000000; -0.0 → +0.0 |
//! | float32      | 4   | 4 bytes likewise; every NaN → 0x7fc00000; -0.0 → +0.0              |
//! | text         | 5   | UTF-8 bytes as stored                                              |
//! | char(n)      | 5   | UTF-8 with trailing spaces removed (backends pad or strip them)    |
//! | binary       | 6   | the bytes (PostgreSQL `\x..` text decoded)                         |
//! | bool         | 7   | one byte 0 or 1                                                    |
//! | date         | 8   | `YYYY-MM-DD`                                                       |
//! | time         | 9   | `HH:MM:SS.ffffff` (always six fraction digits)                     |
//! | timestamp    | 10  | i64 big-endian: microseconds since 1970-01-01 00:00:00, no zone    |
//! | timestamptz  | 11  | i64 big-endian: UTC microseconds since the epoch (the offset applied)|
//! | json         | 12  | compact JSON, object keys sorted, numbers normalized (integral numbers below 2^53 as integers, others shortest round-trip form) |
//! | uuid         | 13  | lower-case hyphenated hex                                          |
//! | other        | 14  | the exact text (or bytes) as read                                  |
//! | fallback     | 15  | a value its class could not parse, by storage kind: a one-byte kind then the raw form, so that it still compares exactly |
//!
//! Decisions: -0.0 is folded into +0.0 (SQL `=` treats them as equal, and not every read path
//! keeps the sign; a copy that lost the sign of a zero is not reported). All NaNs are one NaN.
//! A timestamp without zone read as text and a `timestamptz` read in any session time zone
//! (`+00`, `+05:30`, ...) both become microseconds; MariaDB `TIMESTAMP` (read in a `+00:00`
//! session) is timestamptz. JSON numbers go through f64 when not integers, so two JSON numbers
//! that differ only past the 17th significant digit compare equal (documented limitation).
//! MariaDB's `JSON` is an alias of `LONGTEXT` with a `CHECK (json_valid(col))` and keeps the
//! text as written; `describe` reports such a column (declared `JSON`, or `LONGTEXT` with that
//! check on the column or the table) as `json`, so it is compared as JSON like everywhere else
//! (`tests/verify_backends.rs`, `mariadb_json_compares_as_json`).

use serde_json::Value as Json;

use crate::backend::Value;
use crate::ident::Dialect;

/// How a column's values are normalized. From the declared type and dialect, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Integer,
    Decimal,
    Float32,
    Float64,
    Text,
    /// Fixed-width `char(n)`: trailing spaces are not significant.
    Char,
    Binary,
    Bool,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Json,
    Uuid,
    Other,
}

const T_NULL: u8 = 0;
const T_INT: u8 = 1;
const T_DEC: u8 = 2;
const T_F64: u8 = 3;
const T_F32: u8 = 4;
const T_TEXT: u8 = 5;
const T_BIN: u8 = 6;
const T_BOOL: u8 = 7;
const T_DATE: u8 = 8;
const T_TIME: u8 = 9;
const T_TS: u8 = 10;
const T_TSTZ: u8 = 11;
const T_JSON: u8 = 12;
const T_UUID: u8 = 13;
const T_OTHER: u8 = 14;
const T_RAW: u8 = 15;

/// The class of a column declared `ty` (lower case, as `Backend::describe` reports it).
pub fn class_of(dialect: Dialect, ty: &str) -> Class {
    let t = ty.trim().to_ascii_lowercase();
    let base = t.split(['(', ' ']).next().unwrap_or("");
    match dialect {
        Dialect::Postgres => match base {
            "smallint" | "integer" | "bigint" | "int" | "int2" | "int4" | "int8"
            | "smallserial" | "serial" | "bigserial" | "oid" => Class::Integer,
            "numeric" | "decimal" => Class::Decimal,
            "real" | "float4" => Class::Float32,
            "double" | "float8" => Class::Float64,
            "text" | "varchar" | "name" | "citext" => Class::Text,
            "character" if t.starts_with("character varying") => Class::Text,
            "character" | "char" | "bpchar" => Class::Char,
            "bytea" => Class::Binary,
            "boolean" | "bool" => Class::Bool,
            "date" => Class::Date,
            "time" if !t.contains("with time zone") => Class::Time,
            "timestamp" if t.contains("with time zone") => Class::TimestampTz,
            "timestamp" => Class::Timestamp,
            "timestamptz" => Class::TimestampTz,
            "json" | "jsonb" => Class::Json,
            "uuid" => Class::Uuid,
            _ => Class::Other,
        },
        Dialect::Mysql => match base {
            "tinyint" if t.starts_with("tinyint(1)") && !t.contains("unsigned") => Class::Bool,
            "bool" | "boolean" => Class::Bool,
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "bit"
            | "year" => Class::Integer,
            "decimal" | "numeric" | "dec" | "fixed" => Class::Decimal,
            "float" => Class::Float32,
            "double" | "real" => Class::Float64,
            "char" => Class::Char,
            "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Class::Text,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                Class::Binary
            }
            "date" => Class::Date,
            "time" => Class::Time,
            "datetime" => Class::Timestamp,
            "timestamp" => Class::TimestampTz,
            "json" => Class::Json,
            "uuid" => Class::Uuid,
            _ => Class::Other,
        },
        // SQLite: the names people declare, then the affinity rules of
        // https://www.sqlite.org/datatype3.html#determination_of_column_affinity.
        Dialect::Sqlite => match base {
            "bool" | "boolean" => Class::Bool,
            "date" => Class::Date,
            "time" => Class::Time,
            "datetime" | "timestamp" => Class::Timestamp,
            "timestamptz" => Class::TimestampTz,
            "json" | "jsonb" => Class::Json,
            "uuid" => Class::Uuid,
            "decimal" | "numeric" => Class::Decimal,
            "char" | "character" if !t.contains("varying") => Class::Char,
            _ if t.contains("int") => Class::Integer,
            _ if t.contains("char") || t.contains("clob") || t.contains("text") => Class::Text,
            _ if t.contains("blob") || t.is_empty() => Class::Binary,
            _ if t.contains("real") || t.contains("floa") || t.contains("doub") => Class::Float64,
            _ => Class::Other,
        },
    }
}

fn put(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A value borrowed from where it was read: what a backend's bulk read path encodes without
/// building a [`Value`] per column. [`encode_value`] goes through it too, so both paths give the
/// same bytes by construction.
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(u64),
    Float32(u32),
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl ValueRef<'_> {
    /// [`Value::as_key`] without an owned value first.
    pub fn as_key(&self) -> Option<crate::map::Key> {
        match *self {
            ValueRef::Int(v) => Some(crate::map::Key::Int(v)),
            ValueRef::UInt(v) => i64::try_from(v).ok().map(crate::map::Key::Int),
            ValueRef::Text(s) => Some(crate::map::Key::Text(s.to_string())),
            _ => None,
        }
    }
}

impl<'a> From<&'a Value> for ValueRef<'a> {
    fn from(v: &'a Value) -> Self {
        match v {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::UInt(u) => ValueRef::UInt(*u),
            Value::Float(b) => ValueRef::Float(*b),
            Value::Float32(b) => ValueRef::Float32(*b),
            Value::Text(s) => ValueRef::Text(s),
            Value::Bytes(b) => ValueRef::Bytes(b),
        }
    }
}

impl From<ValueRef<'_>> for Value {
    #[inline]
    fn from(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::UInt(u) => Value::UInt(u),
            ValueRef::Float(b) => Value::Float(b),
            ValueRef::Float32(b) => Value::Float32(b),
            ValueRef::Text(s) => Value::Text(s.to_string()),
            ValueRef::Bytes(b) => Value::Bytes(b.to_vec()),
        }
    }
}

/// Appends the canonical encoding of one value of class `class` to `out`.
pub fn encode_value(class: Class, v: &Value, out: &mut Vec<u8>) {
    encode_ref(class, v.into(), out)
}

/// [`encode_value`] of a borrowed value.
pub fn encode_ref(class: Class, v: ValueRef<'_>, out: &mut Vec<u8>) {
    if matches!(v, ValueRef::Null) {
        put(out, T_NULL, &[]);
        return;
    }
    if !encode_class(class, v, out) {
        encode_raw(v, out);
    }
}

/// Appends a row's encoding (columns in order; `classes` and `row` of the same length).
pub fn encode_row(classes: &[Class], row: &[Value], out: &mut Vec<u8>) {
    for (c, v) in classes.iter().zip(row) {
        encode_value(*c, v, out);
    }
}

/// A value its class could not interpret: its storage kind and raw form, still exact.
fn encode_raw(v: ValueRef<'_>, out: &mut Vec<u8>) {
    let mut p = Vec::new();
    match v {
        ValueRef::Null => p.push(0),
        ValueRef::Bool(b) => p.extend_from_slice(&[1, b as u8]),
        ValueRef::Int(i) => {
            p.push(2);
            p.extend_from_slice(i.to_string().as_bytes());
        }
        ValueRef::UInt(u) => {
            p.push(2);
            p.extend_from_slice(u.to_string().as_bytes());
        }
        ValueRef::Float(b) => {
            p.push(3);
            p.extend_from_slice(&f64_bits(f64::from_bits(b)).to_be_bytes());
        }
        ValueRef::Float32(b) => {
            p.push(4);
            p.extend_from_slice(&f32_bits(f32::from_bits(b)).to_be_bytes());
        }
        ValueRef::Text(s) => {
            p.push(5);
            p.extend_from_slice(s.as_bytes());
        }
        ValueRef::Bytes(b) => {
            p.push(6);
            p.extend_from_slice(b);
        }
    }
    put(out, T_RAW, &p);
}

/// Returns false when the value does not parse as its class (then encoded raw).
fn encode_class(class: Class, v: ValueRef<'_>, out: &mut Vec<u8>) -> bool {
    match class {
        Class::Integer => {
            let mut buf = itoa::Buffer::new();
            let s = match v {
                ValueRef::Int(i) => buf.format(i),
                ValueRef::UInt(u) => buf.format(u),
                ValueRef::Bool(b) => buf.format(b as u8),
                ValueRef::Text(s) => match s.trim().parse::<i128>() {
                    Ok(i) => buf.format(i),
                    Err(_) => return false,
                },
                _ => return false,
            };
            put(out, T_INT, s.as_bytes());
        }
        Class::Decimal => {
            let s = match v {
                ValueRef::Int(i) => i.to_string(),
                ValueRef::UInt(u) => u.to_string(),
                ValueRef::Float(b) => float_decimal(f64::from_bits(b)),
                ValueRef::Text(s) => match normalize_decimal(s) {
                    Some(d) => d,
                    None => return false,
                },
                _ => return false,
            };
            put(out, T_DEC, s.as_bytes());
        }
        Class::Float64 => {
            let f = match v {
                ValueRef::Float(b) => f64::from_bits(b),
                ValueRef::Float32(b) => f32::from_bits(b) as f64,
                ValueRef::Int(i) => i as f64,
                ValueRef::Text(s) => match parse_float(s) {
                    Some(f) => f,
                    None => return false,
                },
                _ => return false,
            };
            put(out, T_F64, &f64_bits(f).to_be_bytes());
        }
        Class::Float32 => {
            let f = match v {
                ValueRef::Float32(b) => f32::from_bits(b),
                ValueRef::Float(b) => {
                    let d = f64::from_bits(b);
                    let f = d as f32;
                    // Only an exact f32 is one: a real f64 here is a different value.
                    if !d.is_nan() && f as f64 != d {
                        return false;
                    }
                    f
                }
                ValueRef::Text(s) => match parse_float(s) {
                    Some(d) => {
                        let f = s.trim().parse::<f32>().unwrap_or(d as f32);
                        if d.is_nan() {
                            f32::NAN
                        } else {
                            f
                        }
                    }
                    None => return false,
                },
                _ => return false,
            };
            put(out, T_F32, &f32_bits(f).to_be_bytes());
        }
        Class::Text => match v {
            ValueRef::Text(s) => put(out, T_TEXT, s.as_bytes()),
            ValueRef::Bytes(b) if std::str::from_utf8(b).is_ok() => put(out, T_TEXT, b),
            _ => return false,
        },
        Class::Char => match v {
            ValueRef::Text(s) => put(out, T_TEXT, s.trim_end_matches(' ').as_bytes()),
            _ => return false,
        },
        Class::Binary => match v {
            ValueRef::Bytes(b) => put(out, T_BIN, b),
            ValueRef::Text(s) => match s.strip_prefix("\\x").and_then(unhex) {
                Some(b) => put(out, T_BIN, &b),
                None => put(out, T_BIN, s.as_bytes()),
            },
            _ => return false,
        },
        Class::Bool => {
            let b = match v {
                ValueRef::Bool(b) => b,
                ValueRef::Int(0) | ValueRef::UInt(0) => false,
                ValueRef::Int(1) | ValueRef::UInt(1) => true,
                ValueRef::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                    "t" | "true" | "1" => true,
                    "f" | "false" | "0" => false,
                    _ => return false,
                },
                _ => return false,
            };
            put(out, T_BOOL, &[b as u8]);
        }
        Class::Date => match v {
            ValueRef::Text(s) => match normal_date(s.trim()) {
                Some(d) => put(out, T_DATE, d.as_bytes()),
                None => return false,
            },
            _ => return false,
        },
        Class::Time => match v {
            ValueRef::Text(s) => match normal_time(s.trim()) {
                Some(t) => put(out, T_TIME, &t),
                None => return false,
            },
            _ => return false,
        },
        Class::Timestamp | Class::TimestampTz => match v {
            ValueRef::Text(s) => match parse_timestamp(s) {
                Some(us) => put(
                    out,
                    if class == Class::Timestamp {
                        T_TS
                    } else {
                        T_TSTZ
                    },
                    &us.to_be_bytes(),
                ),
                None => return false,
            },
            _ => return false,
        },
        Class::Json => {
            let parsed = match v {
                ValueRef::Text(s) => serde_json::from_str::<Json>(s),
                ValueRef::Bytes(b) => serde_json::from_slice::<Json>(b),
                _ => return false,
            };
            match parsed {
                Ok(j) => {
                    let mut s = String::new();
                    canonical_json(&j, &mut s);
                    put(out, T_JSON, s.as_bytes());
                }
                Err(_) => return false,
            }
        }
        Class::Uuid => {
            let u = match v {
                ValueRef::Text(s) => uuid::Uuid::parse_str(s.trim()).ok(),
                ValueRef::Bytes(b) => uuid::Uuid::from_slice(b).ok(),
                _ => None,
            };
            match u {
                Some(u) => put(out, T_UUID, u.hyphenated().to_string().as_bytes()),
                None => return false,
            }
        }
        Class::Other => match v {
            ValueRef::Text(s) => put(out, T_OTHER, s.as_bytes()),
            _ => return false,
        },
    }
    true
}

fn f64_bits(f: f64) -> u64 {
    if f.is_nan() {
        0x7ff8_0000_0000_0000
    } else if f == 0.0 {
        0
    } else {
        f.to_bits()
    }
}

fn f32_bits(f: f32) -> u32 {
    if f.is_nan() {
        0x7fc0_0000
    } else if f == 0.0 {
        0
    } else {
        f.to_bits()
    }
}

/// Rust's parser already takes `NaN`, `inf` and `infinity` in any case, with a sign: the text
/// forms of PostgreSQL (`NaN`, `Infinity`, `-Infinity`) and SQLite (`Inf`) need no special case
/// (and no lower-cased copy of every value).
fn parse_float(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok()
}

fn unhex(h: &str) -> Option<Vec<u8>> {
    if !h.len().is_multiple_of(2) {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

fn float_decimal(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Shortest round-trip form, then the same normalization as any decimal text.
    normalize_decimal(&format!("{f:?}")).unwrap_or_else(|| format!("{f:?}"))
}

/// Exponents beyond this stay in normalized scientific form instead of being expanded.
const MAX_EXPAND: i64 = 400;

/// `-001.2300e2` → `-123`; `0.000` → `0`; `-0` → `0`. None when `s` is not a decimal number.
pub fn normalize_decimal(s: &str) -> Option<String> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" => return Some("NaN".into()),
        "infinity" | "+infinity" | "inf" => return Some("Infinity".into()),
        "-infinity" | "-inf" => return Some("-Infinity".into()),
        _ => {}
    }
    let (neg, rest) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // digits × 10^(point), with the decimal point after `point` digits of `digits`.
    let digits: String = format!("{int}{frac}");
    let lead = digits.bytes().take_while(|b| *b == b'0').count();
    let digits = &digits[lead..];
    let digits = digits.trim_end_matches('0');
    if digits.is_empty() {
        return Some("0".into());
    }
    // Position of the decimal point relative to the start of `digits`.
    let point = int.len() as i64 - lead as i64 + exp;
    let n = digits.len() as i64;
    let sign = if neg { "-" } else { "" };
    if point > n + MAX_EXPAND || point < -MAX_EXPAND {
        return Some(format!("{sign}0.{digits}e{point}"));
    }
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point >= n {
        format!("{digits}{}", "0".repeat((point - n) as usize))
    } else {
        format!(
            "{}.{}",
            &digits[..point as usize],
            &digits[point as usize..]
        )
    };
    Some(format!("{sign}{body}"))
}

/// Microseconds since the epoch: `YYYY-MM-DD[ T]HH:MM:SS[.f][zone]`, zone `Z`, `±HH`, `±HHMM`,
/// `±HH:MM` or `±HH:MM:SS` (applied: the result is UTC), or a bare date (midnight).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let t = s.trim();
    // The zone starts after the time part: the first `+`, `-`, `Z` or space after position 10.
    let (body, zone) = match t
        .char_indices()
        .skip(11)
        .find(|(_, c)| matches!(c, '+' | '-' | 'Z' | 'z' | ' '))
    {
        Some((i, _)) => (&t[..i], t[i..].trim()),
        None => (t, ""),
    };
    // Every backend's usual form is read by hand: chrono's parser re-reads its format string
    // for every value, ~30% of verifying a table with one timestamp column.
    let naive = match plain_datetime(body) {
        Some(n) => n,
        None => {
            if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
                return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
            }
            chrono::NaiveDateTime::parse_from_str(body, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(body, "%Y-%m-%dT%H:%M:%S%.f"))
                .ok()?
        }
    };
    let offset_s = parse_offset(zone)?;
    naive
        .and_utc()
        .timestamp_micros()
        .checked_sub(offset_s * 1_000_000)
}

/// The value of ASCII decimal digits (at most 9 of them); None if any byte is not a digit.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// `YYYY-MM-DD` exactly, a valid date.
fn plain_date(b: &[u8]) -> Option<chrono::NaiveDate> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = digits(&b[..4])? as i32;
    chrono::NaiveDate::from_ymd_opt(y, digits(&b[5..7])?, digits(&b[8..10])?)
}

/// `HH:MM:SS[.f]` exactly (1 to 9 fraction digits), a valid time. A leap second (`:60`) is
/// left to chrono's parser.
fn plain_time(b: &[u8]) -> Option<chrono::NaiveTime> {
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, sec) = (digits(&b[..2])?, digits(&b[3..5])?, digits(&b[6..8])?);
    if sec > 59 {
        return None;
    }
    let nanos = match &b[8..] {
        [] => 0,
        [b'.', f @ ..] if (1..=9).contains(&f.len()) => digits(f)? * 10u32.pow(9 - f.len() as u32),
        _ => return None,
    };
    chrono::NaiveTime::from_hms_nano_opt(h, m, sec, nanos)
}

/// `YYYY-MM-DD HH:MM:SS[.f]` (or with `T`) exactly: what chrono's parser gives for it. None
/// for any other form, which then goes to chrono's parser.
fn plain_datetime(s: &str) -> Option<chrono::NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() < 19 || !matches!(b[10], b' ' | b'T') {
        return None;
    }
    Some(plain_date(&b[..10])?.and_time(plain_time(&b[11..])?))
}

/// A date's canonical text, `YYYY-MM-DD`.
fn normal_date(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if plain_date(s.as_bytes()).is_some() {
        // Already in the canonical form: chrono would print it back unchanged.
        return Some(s.into());
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.format("%Y-%m-%d").to_string().into())
}

/// A time's canonical text, `HH:MM:SS.ffffff` (microseconds, truncated).
fn normal_time(s: &str) -> Option<Vec<u8>> {
    let t = match plain_time(s.as_bytes()) {
        Some(t) => t,
        None => chrono::NaiveTime::parse_from_str(s, "%H:%M:%S%.f").ok()?,
    };
    Some(t.format("%H:%M:%S%.6f").to_string().into_bytes())
}

fn parse_offset(z: &str) -> Option<i64> {
    if z.is_empty() || z.eq_ignore_ascii_case("z") || z.eq_ignore_ascii_case("utc") {
        return Some(0);
    }
    let (sign, rest) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    let parts: Vec<&str> = if rest.contains(':') {
        rest.split(':').collect()
    } else if rest.len() == 4 {
        vec![&rest[..2], &rest[2..]]
    } else {
        vec![rest]
    };
    if parts.is_empty() || parts.len() > 3 {
        return None;
    }
    let mut secs = 0i64;
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: i64 = p.parse().ok()?;
        secs += v * [3600, 60, 1][i];
    }
    Some(sign * secs)
}

/// Compact JSON with sorted object keys and normalized numbers.
pub fn canonical_json(j: &Json, out: &mut String) {
    match j {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f == f.trunc() && f.abs() < 9_007_199_254_740_992.0 {
                    out.push_str(&(f as i64).to_string());
                } else {
                    out.push_str(&format!("{f:?}"));
                }
            }
        }
        Json::String(s) => out.push_str(&Json::String(s.clone()).to_string()),
        Json::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        Json::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String((*k).clone()).to_string());
                out.push(':');
                canonical_json(&m[*k], out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(c: Class, v: Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(c, &v, &mut out);
        out
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn null_differs_from_every_value() {
        let null = enc(Class::Text, Value::Null);
        assert_ne!(null, enc(Class::Text, t("")));
        assert_ne!(null, enc(Class::Integer, Value::Int(0)));
        assert_ne!(null, enc(Class::Binary, Value::Bytes(vec![])));
        assert_ne!(null, enc(Class::Bool, Value::Bool(false)));
    }

    #[test]
    fn decimals_normalize() {
        for (a, b) in [
            ("1.50", "1.5"),
            ("-0.000", "0"),
            ("001.2300e2", "123"),
            ("1e3", "1000"),
            ("0.05", "5e-2"),
            ("+7", "7.000"),
            ("-12.340", "-12.34"),
        ] {
            assert_eq!(normalize_decimal(a), normalize_decimal(b), "{a} vs {b}");
        }
        assert_eq!(normalize_decimal("1.2300e2").as_deref(), Some("123"));
        assert_eq!(normalize_decimal("0.0500").as_deref(), Some("0.05"));
        assert_eq!(normalize_decimal("-0").as_deref(), Some("0"));
        assert_eq!(normalize_decimal("1.5.1"), None);
        assert_eq!(normalize_decimal("abc"), None);
        assert_ne!(normalize_decimal("1.5"), normalize_decimal("15"));
        // A decimal read as an integer or as a float (SQLite numeric affinity) matches its text.
        assert_eq!(
            enc(Class::Decimal, Value::Int(12)),
            enc(Class::Decimal, t("12.00"))
        );
        assert_eq!(
            enc(Class::Decimal, Value::from_f64(1.1)),
            enc(Class::Decimal, t("1.10"))
        );
    }

    #[test]
    fn float_text_forms_of_every_backend() {
        for (s, f) in [
            ("NaN", f64::NAN),
            ("nan", f64::NAN),
            ("-NaN", f64::NAN),
            ("Infinity", f64::INFINITY),
            ("+infinity", f64::INFINITY),
            ("Inf", f64::INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
            ("-inf", f64::NEG_INFINITY),
            (" 1.5e3 ", 1500.0),
        ] {
            assert_eq!(
                enc(Class::Float64, t(s)),
                enc(Class::Float64, Value::from_f64(f)),
                "{s}"
            );
        }
        // Not a float: kept raw, still distinct from every float.
        assert_ne!(
            enc(Class::Float64, t("infinit")),
            enc(Class::Float64, Value::from_f64(f64::INFINITY))
        );
    }

    #[test]
    fn floats_fold_nan_and_negative_zero() {
        let nan2 = f64::from_bits(0x7ff8_0000_0000_0001);
        assert_eq!(
            enc(Class::Float64, Value::from_f64(f64::NAN)),
            enc(Class::Float64, Value::from_f64(nan2))
        );
        assert_eq!(
            enc(Class::Float64, Value::from_f64(-0.0)),
            enc(Class::Float64, Value::from_f64(0.0))
        );
        assert_eq!(
            enc(Class::Float64, t("NaN")),
            enc(Class::Float64, Value::from_f64(f64::NAN))
        );
        assert_eq!(
            enc(Class::Float64, t("-0")),
            enc(Class::Float64, Value::from_f64(0.0))
        );
        assert_eq!(
            enc(Class::Float64, t("0.30000000000000004")),
            enc(Class::Float64, Value::from_f64(0.1 + 0.2))
        );
        assert_ne!(
            enc(Class::Float64, Value::from_f64(0.3)),
            enc(Class::Float64, Value::from_f64(0.1 + 0.2))
        );
        assert_eq!(
            enc(Class::Float32, t("1.1")),
            enc(Class::Float32, Value::Float32(1.1f32.to_bits()))
        );
        assert_eq!(
            enc(Class::Float32, t("-0")),
            enc(Class::Float32, Value::Float32(0f32.to_bits()))
        );
    }

    #[test]
    fn char_padding_and_text() {
        assert_eq!(enc(Class::Char, t("ab   ")), enc(Class::Char, t("ab")));
        assert_ne!(enc(Class::Text, t("ab ")), enc(Class::Text, t("ab")));
    }

    #[test]
    fn binary_from_pg_hex_text() {
        assert_eq!(
            enc(Class::Binary, t("\\x00ff10")),
            enc(Class::Binary, Value::Bytes(vec![0, 255, 16]))
        );
    }

    #[test]
    fn bools_from_every_backend() {
        let tr = enc(Class::Bool, Value::Bool(true));
        assert_eq!(tr, enc(Class::Bool, Value::Int(1)));
        assert_eq!(tr, enc(Class::Bool, t("t")));
        assert_ne!(tr, enc(Class::Bool, Value::Int(0)));
        // tinyint(1) holding 5 is not a bool and must not become one.
        assert_ne!(tr, enc(Class::Bool, Value::Int(5)));
    }

    #[test]
    fn timestamps_in_any_zone() {
        let utc = enc(Class::TimestampTz, t("2024-03-01 10:00:00+00"));
        assert_eq!(utc, enc(Class::TimestampTz, t("2024-03-01 15:30:00+05:30")));
        assert_eq!(utc, enc(Class::TimestampTz, t("2024-03-01 05:00:00-05")));
        assert_eq!(utc, enc(Class::TimestampTz, t("2024-03-01T10:00:00Z")));
        assert_eq!(
            utc,
            enc(Class::TimestampTz, t("2024-03-01 10:00:00.000000"))
        );
        assert_ne!(
            utc,
            enc(Class::TimestampTz, t("2024-03-01 10:00:00.000001"))
        );
        assert_eq!(
            enc(Class::Timestamp, t("2024-03-01 10:00:00.5")),
            enc(Class::Timestamp, t("2024-03-01T10:00:00.500000"))
        );
        assert_eq!(
            enc(Class::Time, t("10:00:00")),
            enc(Class::Time, t("10:00:00.000000"))
        );
        assert_eq!(
            enc(Class::Date, t("2024-03-01")),
            enc(Class::Date, t(" 2024-03-01"))
        );
        // Unparsable temporal text still compares exactly.
        assert_eq!(
            enc(Class::Date, t("0000-00-00")),
            enc(Class::Date, t("0000-00-00"))
        );
        assert_ne!(
            enc(Class::Date, t("0000-00-00")),
            enc(Class::Date, t("infinity"))
        );
    }

    #[test]
    fn json_key_order_spacing_numbers() {
        assert_eq!(
            enc(
                Class::Json,
                t(r#"{"b": 1, "a": [1.0, 2.50, {"y":null,"x":true}]}"#)
            ),
            enc(Class::Json, t(r#"{"a":[1,2.5,{"x":true,"y":null}],"b":1}"#))
        );
        assert_ne!(
            enc(Class::Json, t(r#"{"a":1}"#)),
            enc(Class::Json, t(r#"{"a":"1"}"#))
        );
    }

    #[test]
    fn uuid_case() {
        assert_eq!(
            enc(Class::Uuid, t("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11")),
            enc(Class::Uuid, t("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
        );
    }

    #[test]
    fn classes_from_declared_types() {
        use Dialect::*;
        assert_eq!(class_of(Postgres, "character(5)"), Class::Char);
        assert_eq!(class_of(Postgres, "character varying(5)"), Class::Text);
        assert_eq!(
            class_of(Postgres, "timestamp with time zone"),
            Class::TimestampTz
        );
        assert_eq!(
            class_of(Postgres, "timestamp(3) without time zone"),
            Class::Timestamp
        );
        assert_eq!(class_of(Postgres, "numeric(10,2)"), Class::Decimal);
        assert_eq!(class_of(Postgres, "double precision"), Class::Float64);
        assert_eq!(class_of(Mysql, "tinyint(1)"), Class::Bool);
        assert_eq!(class_of(Mysql, "bigint(20) unsigned"), Class::Integer);
        assert_eq!(class_of(Mysql, "timestamp(6)"), Class::TimestampTz);
        assert_eq!(class_of(Mysql, "char(4)"), Class::Char);
        assert_eq!(class_of(Sqlite, "INTEGER"), Class::Integer);
        assert_eq!(class_of(Sqlite, "varchar(10)"), Class::Text);
        assert_eq!(class_of(Sqlite, "real"), Class::Float64);
        assert_eq!(class_of(Sqlite, "boolean"), Class::Bool);
    }

    proptest! {
        #[test]
        fn decimal_scale_does_not_matter(i in -1_000_000i64..1_000_000, zeros in 0usize..4) {
            let s = format!("{}.{:03}", i / 1000, (i % 1000).abs());
            let padded = format!("{s}{}", "0".repeat(zeros));
            prop_assert_eq!(normalize_decimal(&s), normalize_decimal(&padded));
        }

        #[test]
        fn decimal_normal_form_is_a_fixed_point(s in "-?[0-9]{1,12}(\\.[0-9]{0,8})?") {
            let n = normalize_decimal(&s).unwrap();
            prop_assert_eq!(normalize_decimal(&n), Some(n.clone()));
            let a: f64 = s.parse().unwrap();
            let b: f64 = n.parse().unwrap();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn floats_through_text_match_bits(f in any::<f64>()) {
            let text = if f.is_nan() { "NaN".to_string() } else if f.is_infinite() {
                if f > 0.0 { "Infinity".into() } else { "-Infinity".into() }
            } else { format!("{f:?}") };
            prop_assert_eq!(enc(Class::Float64, t(&text)), enc(Class::Float64, Value::from_f64(f)));
        }

        #[test]
        fn distinct_ints_distinct_encodings(a in any::<i64>(), b in any::<i64>()) {
            prop_assume!(a != b);
            prop_assert_ne!(enc(Class::Integer, Value::Int(a)), enc(Class::Integer, Value::Int(b)));
            prop_assert_eq!(enc(Class::Integer, Value::Int(a)), enc(Class::Integer, t(&a.to_string())));
        }

        #[test]
        fn rows_split_unambiguously(a in ".{0,8}", b in ".{0,8}", c in ".{0,8}", d in ".{0,8}") {
            prop_assume!((a.clone(), b.clone()) != (c.clone(), d.clone()));
            let mut x = Vec::new();
            encode_row(&[Class::Text, Class::Text], &[t(&a), t(&b)], &mut x);
            let mut y = Vec::new();
            encode_row(&[Class::Text, Class::Text], &[t(&c), t(&d)], &mut y);
            prop_assert_ne!(x, y);
        }

        #[test]
        fn hand_parsed_dates_and_times_agree_with_chrono(
            y in 0u32..10_000, mo in 0u32..14, d in 0u32..33,
            h in 0u32..26, mi in 0u32..62, sec in 0u32..62,
            frac in "(\\.[0-9]{0,11})?", sep in "[ T]",
        ) {
            use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
            let date = format!("{y:04}-{mo:02}-{d:02}");
            let time = format!("{h:02}:{mi:02}:{sec:02}{frac}");
            let dt = format!("{date}{sep}{time}");
            let by_chrono = NaiveDate::parse_from_str(&date, "%Y-%m-%d").ok();
            prop_assert_eq!(plain_date(date.as_bytes()), by_chrono);
            let by_chrono = NaiveTime::parse_from_str(&time, "%H:%M:%S%.f").ok();
            match plain_time(time.as_bytes()) {
                Some(t) => prop_assert_eq!(Some(t), by_chrono),
                // Only the forms left to chrono on purpose.
                None => prop_assert!(by_chrono.is_none() || sec == 60 || frac.len() > 10),
            }
            let by_chrono = NaiveDateTime::parse_from_str(&dt, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| NaiveDateTime::parse_from_str(&dt, "%Y-%m-%dT%H:%M:%S%.f"))
                .ok();
            if let Some(n) = plain_datetime(&dt) {
                prop_assert_eq!(Some(n), by_chrono);
            }
            prop_assert_eq!(
                parse_timestamp(&dt),
                by_chrono.map(|n| n.and_utc().timestamp_micros())
            );
            let canonical = normal_date(&date).map(|c| c.into_owned());
            let by_chrono = NaiveDate::parse_from_str(&date, "%Y-%m-%d")
                .ok()
                .map(|d| d.format("%Y-%m-%d").to_string());
            prop_assert_eq!(canonical, by_chrono);
        }

        #[test]
        fn timestamptz_offsets(secs in 0i64..4_000_000_000, off_min in -720i64..840) {
            let utc = chrono::DateTime::from_timestamp(secs, 0).unwrap().naive_utc();
            let local = utc + chrono::Duration::minutes(off_min);
            let sign = if off_min < 0 { '-' } else { '+' };
            let m = off_min.abs();
            let a = format!("{}{sign}{:02}:{:02}", local.format("%Y-%m-%d %H:%M:%S"), m / 60, m % 60);
            let b = format!("{}+00", utc.format("%Y-%m-%d %H:%M:%S"));
            prop_assert_eq!(enc(Class::TimestampTz, t(&a)), enc(Class::TimestampTz, t(&b)));
        }
    }
}

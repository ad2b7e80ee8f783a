//! Strict JSON for configuration values: [`parse_exact`] accepts only documents whose every
//! number is kept exactly and whose objects have unique keys (docs/format.md §8).
//!
//! serde_json (built without `arbitrary_precision`, which would change it for every crate
//! of the build) turns an integer beyond 64 bits into the nearest `f64`, reads
//! `1.00000000000000000001` as `1.0`, keeps `-0` as negative zero (which many JSON tools
//! print as `0`) and keeps only the last of two equal keys. Each of these silently stores
//! something other than what was sent, so they are refused instead, with the offending
//! literal or key and its JSON pointer (RFC 6901). serde_json still does the parsing (and
//! reports syntax errors); a small scanner then reads the raw text again for what the
//! parsed value no longer shows: number literals and repeated keys.

use std::collections::HashSet;

use serde_json::Value;

/// Longest number literal or key quoted back in an error, in characters (the rest is
/// elided): the error names the value, it does not echo a megabyte of digits.
const SHOWN_CHARS_MAX: usize = 80;

/// Why a JSON text was refused by [`parse_exact`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExactJsonError {
    /// Not JSON at all.
    #[error("not valid JSON: {0}")]
    Syntax(String),
    /// An integer literal outside both i64 and u64.
    #[error(
        "the integer {literal} {} is outside the 64-bit range (-9223372036854775808 to 18446744073709551615) and would \
         not be kept exactly; send it as a string",
        at(.pointer)
    )]
    IntegerOutOfRange {
        /// The literal as sent (shortened).
        literal: String,
        /// Where it is (JSON pointer; empty for the whole document).
        pointer: String,
    },
    /// `-0`, `-0.0`, `-0e3`, ...: readers disagree on whether it is 0.
    #[error("the number {literal} {} is a negative zero, which JSON readers disagree about; send 0", at(.pointer))]
    NegativeZero {
        /// The literal as sent (shortened).
        literal: String,
        /// Where it is.
        pointer: String,
    },
    /// A decimal or exponent literal that no 64-bit float holds exactly as written.
    #[error(
        "the number {literal} {} cannot be stored exactly (as a 64-bit float it would become {nearest}); send at most \
         17 significant digits within the float range, or a string",
        at(.pointer)
    )]
    InexactNumber {
        /// The literal as sent (shortened).
        literal: String,
        /// Where it is.
        pointer: String,
        /// What it would have become (`inf` when out of range).
        nearest: String,
    },
    /// An object with the same key twice.
    #[error("the object {} has the key {key:?} more than once; keep one", at(.pointer))]
    DuplicateKey {
        /// The repeated key (shortened).
        key: String,
        /// Where the object is.
        pointer: String,
    },
}

impl ExactJsonError {
    /// The JSON pointer of the offending value or object (empty: the whole document), if
    /// the error has one.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            Self::Syntax(_) => None,
            Self::IntegerOutOfRange { pointer, .. }
            | Self::NegativeZero { pointer, .. }
            | Self::InexactNumber { pointer, .. }
            | Self::DuplicateKey { pointer, .. } => Some(pointer),
        }
    }

    /// Whether the text was not JSON at all (as opposed to JSON that is refused).
    pub fn is_syntax(&self) -> bool {
        matches!(self, Self::Syntax(_))
    }
}

fn at(pointer: &str) -> String {
    if pointer.is_empty() { "at the top level".to_owned() } else { format!("at {pointer}") }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= SHOWN_CHARS_MAX {
        return text.to_owned();
    }
    let head: String = text.chars().take(SHOWN_CHARS_MAX).collect();
    format!("{head}…")
}

/// Parses `text` as JSON, refusing integers outside i64/u64, negative zero in any spelling,
/// decimal or exponent literals a 64-bit float does not hold exactly as written (`0.1`,
/// `1.5`, `1e-7` and `2.50` are fine; `1.00000000000000000001` and `1e400` are not), and
/// objects with a repeated key, at any depth. The first offence in document order is
/// reported.
pub fn parse_exact(text: &str) -> Result<Value, ExactJsonError> {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            // serde_json refuses numbers beyond the float range (`1e400`, 400 digits) as a
            // syntax error; the scan names the literal and where it is.
            if e.to_string().starts_with("number out of range") {
                scan(text)?;
            }
            return Err(ExactJsonError::Syntax(e.to_string()));
        }
    };
    scan(text)?;
    Ok(value)
}

/// [`parse_exact`] of bytes that must be UTF-8.
pub fn parse_exact_slice(bytes: &[u8]) -> Result<Value, ExactJsonError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ExactJsonError::Syntax(format!("the text is not UTF-8 ({e}); send UTF-8 JSON")))?;
    parse_exact(text)
}

/// One open container of the scan.
enum Frame {
    Object {
        /// Keys seen so far.
        keys: HashSet<String>,
        /// The key whose value comes next (or came last).
        current: String,
        /// Whether the next string is a key.
        expect_key: bool,
    },
    Array {
        /// Index of the current element.
        index: usize,
    },
}

/// RFC 6901 pointer of the position the frames describe.
fn pointer_of(frames: &[Frame]) -> String {
    let mut out = String::new();
    for f in frames {
        out.push('/');
        match f {
            Frame::Object { current, .. } => out.push_str(&current.replace('~', "~0").replace('/', "~1")),
            Frame::Array { index } => out.push_str(&index.to_string()),
        }
    }
    out
}

/// Reads the raw text of a document serde_json accepted (or refused only for a number out
/// of range): checks every number literal and the keys of every object.
fn scan(text: &str) -> Result<(), ExactJsonError> {
    let bytes = text.as_bytes();
    let mut frames: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                frames.push(Frame::Object { keys: HashSet::new(), current: String::new(), expect_key: true });
                i += 1;
            }
            b'[' => {
                frames.push(Frame::Array { index: 0 });
                i += 1;
            }
            b'}' | b']' => {
                frames.pop();
                i += 1;
            }
            b',' => {
                match frames.last_mut() {
                    Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                    Some(Frame::Array { index }) => *index += 1,
                    None => {}
                }
                i += 1;
            }
            b'"' => {
                let end = string_end(bytes, i);
                if let Some(Frame::Object { keys, current, expect_key }) = frames.last_mut()
                    && *expect_key
                {
                    // serde_json accepted the document, so the token is a valid string.
                    let key: String = serde_json::from_str(&text[i..end])
                        .map_err(|e| ExactJsonError::Syntax(format!("a key does not decode: {e}")))?;
                    if !keys.insert(key.clone()) {
                        frames.pop();
                        return Err(ExactJsonError::DuplicateKey { key: shorten(&key), pointer: pointer_of(&frames) });
                    }
                    *current = key;
                    *expect_key = false;
                }
                i = end;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                    i += 1;
                }
                check_number(&text[start..i], &frames)?;
            }
            // Whitespace, ':', and the letters of true, false and null.
            _ => i += 1,
        }
    }
    Ok(())
}

/// Index just past the closing quote of the string starting at `start` (a `"`).
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            // An escape: the next byte is never the end (`\"`, `\\`, `\u…`).
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// A decimal number as sign, significant digits (no leading or trailing zeros; empty for
/// zero) and the power of ten of the last digit.
#[derive(Debug, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    digits: String,
    exponent: i64,
}

/// Reads a JSON number literal (or Rust's `{:e}` output) into a [`Decimal`]. Exponents are
/// saturated far beyond any float's range, which keeps the comparison right.
fn decimal(literal: &str) -> Decimal {
    let (negative, rest) = match literal.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, literal),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, ""),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let exp_negative = exp.starts_with('-');
    let mut exponent: i64 = 0;
    for d in exp.bytes().filter(u8::is_ascii_digit) {
        exponent = exponent.saturating_mul(10).saturating_add(i64::from(d - b'0')).min(1 << 40);
    }
    if exp_negative {
        exponent = -exponent;
    }
    let all = format!("{int}{frac}");
    let trimmed_end = all.trim_end_matches('0');
    let trailing = all.len() - trimmed_end.len();
    let digits = trimmed_end.trim_start_matches('0').to_owned();
    let frac_len = i64::try_from(frac.len()).unwrap_or(i64::MAX);
    let trailing = i64::try_from(trailing).unwrap_or(i64::MAX);
    let exponent = if digits.is_empty() { 0 } else { exponent - frac_len + trailing };
    Decimal { negative: negative && !digits.is_empty(), digits, exponent }
}

fn check_number(literal: &str, frames: &[Frame]) -> Result<(), ExactJsonError> {
    let pointer = || pointer_of(frames);
    let negative = literal.starts_with('-');
    let is_integer = !literal.contains(['.', 'e', 'E']);
    let value = decimal(literal);
    if negative && value.digits.is_empty() {
        return Err(ExactJsonError::NegativeZero { literal: shorten(literal), pointer: pointer() });
    }
    if is_integer {
        let fits = if negative { literal.parse::<i64>().is_ok() } else { literal.parse::<u64>().is_ok() };
        if !fits {
            return Err(ExactJsonError::IntegerOutOfRange { literal: shorten(literal), pointer: pointer() });
        }
        return Ok(());
    }
    // Rust's parse rounds correctly; `{:e}` writes the shortest digits that read back as
    // the same float, which is what the canonical form stores (§8). The literal is exact
    // when that text has the literal's decimal value.
    let float: f64 = literal.parse().unwrap_or(f64::INFINITY);
    if !float.is_finite() {
        return Err(ExactJsonError::InexactNumber {
            literal: shorten(literal),
            pointer: pointer(),
            nearest: "inf".to_owned(),
        });
    }
    let shortest = format!("{float:e}");
    if decimal(&shortest) != value && !other_tie_spelling(&value, &decimal(&shortest), float) {
        return Err(ExactJsonError::InexactNumber { literal: shorten(literal), pointer: pointer(), nearest: shortest });
    }
    Ok(())
}

/// Whether `value` (a literal that reads as `float`) is the other shortest spelling of
/// `float`: a float exactly halfway between two decimals of the shortest length has two
/// (`716649072271447.2` and `.3` for 716649072271447.25), and serde_json's ryu and Rust's
/// formatter break that tie differently. So `value` is one unit of the last digit away from
/// `shortest`, and `float` is exactly their midpoint.
fn other_tie_spelling(value: &Decimal, shortest: &Decimal, float: f64) -> bool {
    if value.negative != shortest.negative || value.digits.is_empty() || shortest.digits.is_empty() {
        return false;
    }
    // Both as integers scaled to the smaller exponent (a float has at most 17 significant
    // digits; anything longer is not a tie).
    let exponent = value.exponent.min(shortest.exponent);
    let scaled = |d: &Decimal| -> Option<u128> {
        let pad = usize::try_from(d.exponent - exponent).ok()?;
        (d.digits.len() + pad <= 30).then(|| format!("{}{}", d.digits, "0".repeat(pad)).parse().ok())?
    };
    let (Some(a), Some(b)) = (scaled(value), scaled(shortest)) else { return false };
    if a.abs_diff(b) != 1 {
        return false;
    }
    let sign = if value.negative { "-" } else { "" };
    let midpoint = decimal(&format!("{sign}{}e{}", (a + b) * 5, exponent - 1));
    // 800 digits write any binary64 exactly (the longest needs 767).
    decimal(&format!("{float:.800e}")) == midpoint
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn ordinary_documents_parse_as_serde_json_reads_them() {
        let text = r#"{"a": [1, -2, 0, 0.1, 1.5, 1e-7, 2.50, 1E+3, -1.25e-2, 18446744073709551615,
                       -9223372036854775808, 0.0, 0e10, true, null, "x\"y\\", {"b": {}}], "a\/b": "\u00e9"}"#;
        let v = parse_exact(text).unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(v["a"][9], json!(u64::MAX));
        assert_eq!(v["a"][10], json!(i64::MIN));
    }

    #[test]
    fn integers_beyond_64_bits_are_refused_with_their_pointer() {
        let e = parse_exact(r#"{"value": 18446744073709551616}"#).unwrap_err();
        assert_eq!(
            e,
            ExactJsonError::IntegerOutOfRange { literal: "18446744073709551616".into(), pointer: "/value".into() }
        );
        assert!(e.to_string().contains("18446744073709551616 at /value"), "{e}");
        let e = parse_exact("[0, -9223372036854775809]").unwrap_err();
        assert_eq!(e.pointer(), Some("/1"));
        assert!(matches!(e, ExactJsonError::IntegerOutOfRange { .. }));
        assert!(parse_exact("100000000000000000000000000000").unwrap_err().to_string().contains("at the top level"));
    }

    #[test]
    fn negative_zero_is_refused_in_every_spelling() {
        for lit in ["-0", "-0.0", "-0e3", "-0.000E-5", "-00.0e+1"] {
            let text = format!(r#"{{"k": [{lit}]}}"#);
            if serde_json::from_str::<Value>(&text).is_err() {
                continue; // not JSON at all (leading zeros)
            }
            let e = parse_exact(&text).unwrap_err();
            assert_eq!(e, ExactJsonError::NegativeZero { literal: lit.into(), pointer: "/k/0".into() }, "{lit}");
        }
        assert!(parse_exact("-0").is_err());
        assert!(parse_exact("0").is_ok() && parse_exact("0.0").is_ok() && parse_exact("0e-5").is_ok());
    }

    #[test]
    fn a_float_halfway_between_two_16_digit_decimals_is_accepted_in_either_spelling() {
        // 716649072271447.25 is a float; 16 digits round it to ...447.2 (ryu) or ...447.3
        // (Rust's formatter). Found by the exact_json property test.
        for text in ["716649072271447.2", "716649072271447.3", "-716649072271447.2"] {
            let back = parse_exact(text).unwrap().as_f64().map(f64::abs);
            assert_eq!(back, Some(716_649_072_271_447.0 + 0.25), "{text}");
        }
        assert!(serde_json::to_string(&(716_649_072_271_447.0_f64 + 0.25)).unwrap().ends_with(".2"));
        // Not a shortest spelling: refused, as any literal whose value is not the shortest's.
        assert!(parse_exact("716649072271447.25").is_err());
        assert!(parse_exact("716649072271447.24").is_err());
    }

    #[test]
    fn a_float_halfway_between_two_17_digit_decimals_is_accepted_in_either_spelling() {
        // -31072208959884.3125 is a float; 17 digits round it to ...312 or ...313.
        for text in ["-31072208959884.312", "-31072208959884.313"] {
            assert_eq!(parse_exact(text).unwrap().as_f64(), Some(-(31_072_208_959_884.0 + 0.3125)), "{text}");
        }
        assert!(parse_exact("-31072208959884.311").is_err());
    }

    #[test]
    fn inexact_decimals_are_refused_and_ordinary_ones_accepted() {
        for ok in ["0.1", "1.5", "1e-7", "2.50", "1e300", "5e-324", "1.7976931348623157e308", "123456.789e3"] {
            assert!(parse_exact(ok).is_ok(), "{ok}");
        }
        for (bad, nearest) in [
            ("1.00000000000000000001", "1e0"),
            ("1e400", "inf"),
            ("1e-400", "0e0"),
            ("0.1000000000000000055511", "1e-1"),
        ] {
            match parse_exact(&format!("[{bad}]")).unwrap_err() {
                ExactJsonError::InexactNumber { literal, pointer, nearest: n } => {
                    assert_eq!((literal.as_str(), pointer.as_str(), n.as_str()), (bad, "/0", nearest));
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let e = parse_exact(r#"{"a":1,"a":2}"#).unwrap_err();
        assert_eq!(e, ExactJsonError::DuplicateKey { key: "a".into(), pointer: String::new() });
        let e = parse_exact(r#"{"x": [{"ok": 1}, {"b": {"c": 1, "\u0063": 2}}]}"#).unwrap_err();
        assert_eq!(e, ExactJsonError::DuplicateKey { key: "c".into(), pointer: "/x/1/b".into() });
        // Equal keys in different objects are fine.
        assert!(parse_exact(r#"{"a": {"a": 1}, "b": {"a": 2}}"#).is_ok());
    }

    #[test]
    fn pointers_escape_tilde_and_slash_and_strings_with_escapes_are_skipped() {
        let e = parse_exact(r#"{"a/b~c": {"\"}": [1, 2, -0]}}"#).unwrap_err();
        assert_eq!(e.pointer(), Some("/a~1b~0c/\"}/2"));
        // Digits and brackets inside strings are not numbers or containers.
        assert!(parse_exact(r#"["-0", "1e400", "\\", "[{", "\u005c"]"#).is_ok());
    }

    #[test]
    fn syntax_errors_and_long_literals() {
        assert!(parse_exact("{").unwrap_err().is_syntax());
        assert!(parse_exact_slice(b"\xff").unwrap_err().is_syntax());
        let long = "9".repeat(500);
        let e = parse_exact(&long).unwrap_err().to_string();
        assert!(e.len() < 400 && e.contains('…'), "{e}");
    }

    proptest::proptest! {
        /// The scan also reads text serde_json gave up on (a number out of range first):
        /// whatever that text is, it must not panic.
        #[test]
        fn scanning_any_text_never_panics(text in "[\\[\\]{}\",:0-9eE.+\\\\u \u{e9}-]{0,60}") {
            let _ = scan(&text);
            let _ = decimal(&text);
        }
    }

    #[test]
    fn decimal_normalises() {
        assert_eq!(decimal("2.50"), decimal("2.5e0"));
        assert_eq!(decimal("100"), Decimal { negative: false, digits: "1".into(), exponent: 2 });
        assert_eq!(decimal("0.00"), Decimal { negative: false, digits: String::new(), exponent: 0 });
        assert_eq!(decimal("-1.25e-2"), Decimal { negative: true, digits: "125".into(), exponent: -4 });
    }
}

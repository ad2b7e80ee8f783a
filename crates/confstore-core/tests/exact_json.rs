//! Properties of `confstore_core::json::parse_exact`: whatever serde_json writes (compact or
//! pretty) is accepted and reads back equal, its canonical text reads back to the same
//! text, a document with one number pushed past what is exact is refused at that number's
//! JSON pointer, and no text makes it panic. Unit tests of each refusal are in the module itself.

use confstore_core::json::{ExactJsonError, parse_exact};
use confstore_core::state::canonical_json_text;
use proptest::prelude::*;
use serde_json::Value;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

/// Any finite float except negative zero (which parse_exact refuses on purpose).
fn arb_float() -> impl Strategy<Value = f64> {
    any::<f64>().prop_filter("finite, not -0", |f| f.is_finite() && !(*f == 0.0 && f.is_sign_negative()))
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        arb_float().prop_map(Value::from),
        (-1_000_000i32..1_000_000, 0i32..12).prop_map(|(n, d)| Value::from(f64::from(n) / 10f64.powi(d))),
        "[a-z0-9 \"\\\\/\n\t\u{1}\u{e9}\u{1F600}{}\\[\\],:-]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z\"\\\\/~{}\\[\\]0-9-]{0,5}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer of a number in `v`.
fn number_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Number(_) => out.push(at),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                number_pointers(item, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                number_pointers(item, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        _ => {}
    }
}

proptest! {
    // Documents without a number are skipped (a third of them): room for that at any count.
    #![proptest_config(ProptestConfig { cases: cases(), max_global_rejects: cases().saturating_mul(2), ..ProptestConfig::default() })]

    #[test]
    fn what_serde_json_writes_is_accepted_and_reads_back_equal(v in arb_json()) {
        for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
            let parsed = parse_exact(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
            prop_assert_eq!(&parsed, &v, "{}", text);
        }
        // The canonical form (what the log stores) is exact too, and stable.
        let canonical = canonical_json_text(&v);
        let again = parse_exact(&canonical).map_err(|e| TestCaseError::fail(format!("{e}: {canonical}")))?;
        prop_assert_eq!(canonical_json_text(&again), canonical);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[\\[\\]{}\",:0-9eE.+\\\\u \u{e9}-]{0,40}") {
        let _ = parse_exact(&text);
    }

    #[test]
    fn a_number_made_inexact_is_refused_at_its_pointer(v in arb_json(), pick in any::<prop::sample::Index>(),
                                                       how in 0..3u8) {
        let mut pointers = Vec::new();
        number_pointers(&v, String::new(), &mut pointers);
        prop_assume!(!pointers.is_empty());
        let target = pointers[pick.index(pointers.len())].clone();
        // Replace that number by a marker string, then the marker's text by a bad literal.
        let mut marked = v.clone();
        *marked.pointer_mut(&target).unwrap() = Value::String("@@bad@@".into());
        let bad = ["18446744073709551616", "-0", "1.00000000000000000001"][usize::from(how)];
        let text = serde_json::to_string(&marked).unwrap().replacen("\"@@bad@@\"", bad, 1);
        let e = parse_exact(&text).unwrap_err();
        prop_assert_eq!(e.pointer(), Some(target.as_str()), "{} in {}", e, text);
        let right_kind = match how {
            0 => matches!(e, ExactJsonError::IntegerOutOfRange { .. }),
            1 => matches!(e, ExactJsonError::NegativeZero { .. }),
            _ => matches!(e, ExactJsonError::InexactNumber { .. }),
        };
        prop_assert!(right_kind, "{:?}", e);
    }
}

//! The canonical forms the integrity work hashes, held to PostgreSQL itself: for generated
//! JSON (duplicate keys, escapes, any characters, deep nesting, numbers of every form,
//! beyond what a float holds), `audit_layer::integrity::jsonb_text` gives exactly the text
//! PostgreSQL prints for the same value as `jsonb`, and refuses exactly what PostgreSQL
//! refuses.

mod support;

use audit_layer::integrity::jsonb_text;
use proptest::prelude::*;
use support::generate::{json_value, object, text};
use support::TestDb;

/// Numbers in every form JSON allows, and some it does not: long mantissas, exponents
/// near and beyond `numeric`'s limit, zeros with signs and scales.
fn number() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        prop_oneof![Just("0".to_owned()), "[1-9][0-9]{0,30}"],
        proptest::option::of("[0-9]{1,25}"),
        proptest::option::of((
            prop_oneof![Just("e"), Just("E")],
            prop_oneof![Just(""), Just("+"), Just("-")],
            0i64..1100,
        )),
    )
        .prop_map(|(negative, whole, fraction, exponent)| {
            let mut n = String::new();
            if negative {
                n.push('-');
            }
            n.push_str(&whole);
            if let Some(f) = fraction {
                n.push('.');
                n.push_str(&f);
            }
            if let Some((e, sign, digits)) = exponent {
                n.push_str(e);
                n.push_str(sign);
                n.push_str(&digits.to_string());
            }
            n
        })
}

fn document() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => json_value(),
        2 => proptest::collection::vec((text(8), json_value()), 0..6).prop_map(|m| object(&m)),
        2 => proptest::collection::vec(number(), 1..4).prop_map(|n| format!("[{}]", n.join(", "))),
        1 => text(12).prop_map(|t| serde_json::to_string(&t).unwrap()),
        // Escapes as other writers send them, surrogate pairs and lone halves included.
        1 => proptest::collection::vec(
            prop_oneof![Just("\\u00e9"), Just("\\ud83d\\ude00"), Just("\\ud800"), Just("\\udc00x"), Just("\\/"), Just("\\u0000"), Just("\\b\\f"), Just("a")],
            0..6
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat())),
        1 => (1usize..40).prop_map(|depth| format!("{}1{}", "[".repeat(depth), "]".repeat(depth))),
    ]
}

#[test]
fn jsonb_text_is_what_postgresql_prints_for_generated_json() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::migrated("integrity_encoding"));
    let cases: u32 = std::env::var("AUDIT_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let config = ProptestConfig {
        cases,
        ..ProptestConfig::default()
    };
    proptest!(config, |(json in document())| {
        let printed = runtime.block_on(async {
            db.client
                .query_one("SELECT $1::text::jsonb::text", &[&json])
                .await
                .map(|row| row.get::<_, String>(0))
        });
        match (printed, jsonb_text(&json)) {
            (Ok(postgres), Ok(ours)) => prop_assert_eq!(ours, postgres, "{}", json),
            (Err(_), Err(_)) => {}
            (Ok(postgres), Err(e)) => {
                return Err(TestCaseError::fail(format!("{json}: PostgreSQL took it ({postgres}), we refused: {e}")));
            }
            (Err(e), Ok(ours)) => {
                return Err(TestCaseError::fail(format!("{json}: PostgreSQL refused it ({e:?}), we printed {ours}")));
            }
        }
    });
}

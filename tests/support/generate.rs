//! Generators for property tests: text of any characters (NUL and JSON's special ones
//! made likely), JSON values nested a few levels deep as text, keys the layer treats
//! specially.

use proptest::prelude::*;

/// Text of any characters, NUL and the JSON-special ones made likely.
pub fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect()),
        2 => proptest::collection::vec(
            prop_oneof![Just('\0'), Just('"'), Just('\\'), Just('\n'), Just('é'), Just('✓'), Just('a'), Just('\u{1f}')],
            0..max
        )
        .prop_map(|c| c.into_iter().collect()),
        1 => Just(String::new()),
    ]
}

pub fn ip_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("10.1.2.3".to_owned()),
        Just("[::1]:443".to_owned()),
        Just("10.0.0.1:80".to_owned()),
        Just("2001:db8::42".to_owned()),
        Just("[fe80::1]".to_owned()),
        Just(" 192.0.2.1 ".to_owned()),
        text(20),
    ]
}

pub fn severity_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("info".to_owned()),
        Just("warning".to_owned()),
        Just("WARN".to_owned()),
        Just("error".to_owned()),
        Just("critical".to_owned()),
        text(12),
    ]
}

/// A JSON key: arbitrary, or one the layer must treat specially.
pub fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => text(12).prop_map(|k| format!("j{k}")),
        1 => Just("db_password".to_owned()),
        1 => Just("X-Api-Key".to_owned()),
        1 => Just("accessToken".to_owned()),
        1 => Just("j\0nul".to_owned()),
    ]
}

/// JSON values nested a few levels deep, as text, with duplicate keys now and then.
pub fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::to_string(&f).unwrap()),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("null".to_owned()),
        text(16).prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(","))),
            proptest::collection::vec((key(), inner), 0..4).prop_map(|members| object(&members)),
        ]
    })
}

pub fn object(members: &[(String, String)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
        .collect();
    format!("{{{}}}", body.join(","))
}

//! The wasm-derived impls checked token by token with serde_test (serde's own test harness) and
//! through serde_json.
use serde_app::*;
use serde_test::{assert_de_tokens, assert_de_tokens_error, assert_tokens, Token};
use std::borrow::Cow;
use std::collections::BTreeMap;

#[test]
fn unit_newtype_tuple() {
    assert_tokens(&Unit, &[Token::UnitStruct { name: "Unit" }]);
    assert_tokens(&Newtype(7), &[Token::NewtypeStruct { name: "Newtype" }, Token::U32(7)]);
    assert_tokens(&Pair(-1, "x".into()), &[Token::TupleStruct { name: "Pair", len: 2 }, Token::I8(-1), Token::String("x"), Token::TupleStructEnd]);
}

#[test]
fn renames_defaults_skips() {
    let c = Config { server_name: "a".into(), max_connections: 3, tls_cert: None, labels: vec!["t".into()], cache: None };
    assert_tokens(
        &c,
        &[
            Token::Struct { name: "Config", len: 3 },
            Token::Str("serverName"),
            Token::String("a"),
            Token::Str("maxConnections"),
            Token::U16(3),
            Token::Str("tags"),
            Token::Seq { len: Some(1) },
            Token::String("t"),
            Token::SeqEnd,
            Token::StructEnd,
        ],
    );
    let parsed: Config = serde_json::from_str(r#"{"serverName":"b","tags":[],"tlsCert":"pem"}"#).unwrap();
    assert_eq!(parsed, Config { server_name: "b".into(), max_connections: 0, tls_cert: Some("pem".into()), labels: vec![], cache: None });
    assert_de_tokens_error::<Config>(
        &[Token::Struct { name: "Config", len: 1 }, Token::Str("bogus")],
        "unknown field `bogus`, expected one of `serverName`, `maxConnections`, `tlsCert`, `tags`",
    );
}

#[test]
fn generics_and_borrows() {
    let g: Generic<String, u8> = serde_json::from_str(r#"{"value":"v"}"#).unwrap();
    assert_eq!(g, Generic { value: "v".to_string(), extra: 0 });
    let text = r#"{"name":"plain","bytes":"raw"}"#;
    let b: Borrowed = serde_json::from_str(text).unwrap();
    assert_eq!(b.bytes, "raw");
    assert!(matches!(b.name, Cow::Borrowed("plain")));
}

#[test]
fn flatten() {
    let mut rest = BTreeMap::new();
    rest.insert("k".to_string(), "v".to_string());
    let o = Outer { id: 1, inner: Inner { a: 2, b: true }, rest };
    let json = serde_json::to_string(&o).unwrap();
    assert_eq!(json, r#"{"id":1,"a":2,"b":true,"k":"v"}"#);
    assert_eq!(serde_json::from_str::<Outer>(&json).unwrap(), o);
}

#[test]
fn enum_representations() {
    assert_tokens(&Shape::Empty, &[Token::UnitVariant { name: "Shape", variant: "Empty" }]);
    assert_tokens(&Shape::Circle(1.5), &[Token::NewtypeVariant { name: "Shape", variant: "Circle" }, Token::F64(1.5)]);
    assert_tokens(
        &Shape::Rect { w: 2, h: 3 },
        &[Token::StructVariant { name: "Shape", variant: "Rect", len: 2 }, Token::Str("w"), Token::U32(2), Token::Str("h"), Token::U32(3), Token::StructVariantEnd],
    );
    assert_tokens(&Shape::Point(1, -1), &[Token::TupleVariant { name: "Shape", variant: "Point", len: 2 }, Token::I32(1), Token::I32(-1), Token::TupleVariantEnd]);
    assert_eq!(serde_json::to_string(&Event::Stop { at: 5, reason: "done".into() }).unwrap(), r#"{"type":"halt","at":5,"reason":"done"}"#);
    assert_eq!(serde_json::from_str::<Event>(r#"{"at":1,"type":"Start"}"#).unwrap(), Event::Start { at: 1 });
    assert_eq!(serde_json::to_string(&Adjacent::Text("x".into())).unwrap(), r#"{"t":"Text","c":"x"}"#);
    assert_eq!(serde_json::from_str::<Adjacent>(r#"{"t":"Num","c":4}"#).unwrap(), Adjacent::Num(4));
    assert_eq!(serde_json::from_str::<Loose>("12").unwrap(), Loose::Int(12));
    assert_eq!(serde_json::from_str::<Loose>(r#"["a"]"#).unwrap(), Loose::List(vec!["a".into()]));
}

#[test]
fn transparent_from_into_defaults_aliases() {
    assert_tokens(&Meters(2.5), &[Token::F32(2.5)]);
    assert_de_tokens(&Upper("LOUD".into()), &[Token::Str("loud")]);
    assert_eq!(serde_json::to_string(&Upper("x".into())).unwrap(), r#""x""#);
    let w: WithDefaults = serde_json::from_str(r#"{"host_name":"h"}"#).unwrap();
    assert_eq!(w, WithDefaults { port: 8980, host: "h".into() });
}

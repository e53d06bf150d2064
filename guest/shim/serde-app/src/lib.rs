//! Types that exercise serde_derive's attributes, derived by the wasm serde_derive.
use serde_derive_shim::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
pub struct Unit;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Newtype(pub u32);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Pair(pub i8, pub String);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub server_name: String,
    #[serde(default)]
    pub max_connections: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<String>,
    #[serde(rename = "tags")]
    pub labels: Vec<String>,
    #[serde(skip)]
    pub cache: Option<u8>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Generic<T, U: Default> {
    pub value: T,
    #[serde(default)]
    pub extra: U,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Borrowed<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    pub bytes: &'a str,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Inner {
    pub a: u8,
    pub b: bool,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct Outer {
    pub id: u64,
    #[serde(flatten)]
    pub inner: Inner,
    #[serde(flatten)]
    pub rest: BTreeMap<String, String>,
}

/// Externally tagged (the default).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub enum Shape {
    Empty,
    Circle(f64),
    Rect { w: u32, h: u32 },
    Point(i32, i32),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "type")]
pub enum Event {
    Start { at: u64 },
    #[serde(rename = "halt")]
    Stop { at: u64, reason: String },
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "t", content = "c")]
pub enum Adjacent {
    Num(i64),
    Text(String),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(untagged)]
pub enum Loose {
    Int(i64),
    List(Vec<String>),
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(transparent)]
pub struct Meters(pub f32);

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
#[serde(from = "String", into = "String")]
pub struct Upper(pub String);

impl From<String> for Upper {
    fn from(s: String) -> Self {
        Upper(s.to_uppercase())
    }
}

impl From<Upper> for String {
    fn from(u: Upper) -> String {
        u.0
    }
}

fn default_port() -> u16 {
    8980
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct WithDefaults {
    #[serde(default = "default_port")]
    pub port: u16,
    #[serde(alias = "host_name")]
    pub host: String,
}

//! serde_derive as a wasm macro, the way watt runs it: serde_derive's own modules, compiled from
//! Debian's sources (librust-serde-derive-dev, /usr/share/cargo/registry/serde_derive-1.0.152)
//! without a line changed, on proc-macro2's fallback instead of the compiler's proc_macro. Only
//! serde_derive's lib.rs (the two `#[proc_macro_derive]` entry points, which need proc_macro) is
//! replaced by the two exports below, which do what it does.
//!
//! One adjustment, to the output only: serde_derive defines and calls a helper macro named `try`.
//! Handed back as tokens (the compiler's proc_macro), that ident keeps the edition of its span and
//! works in every edition; handed back as text, as our ABI does, the shim re-reads it in the
//! calling crate's edition, where `try` is a keyword since 2018. So every `try` ident of the
//! expansion is written as the raw ident `r#try`, which means the same in every edition.
#![allow(unknown_lints, bare_trait_objects, clippy::all)]

#[macro_use]
extern crate quote;
#[macro_use]
extern crate syn;

extern crate proc_macro2;
extern crate reapi_macro;

#[path = "/usr/share/cargo/registry/serde_derive-1.0.152/src/internals/mod.rs"]
mod internals;

#[macro_use]
#[path = "/usr/share/cargo/registry/serde_derive-1.0.152/src/bound.rs"]
mod bound;
#[macro_use]
#[path = "/usr/share/cargo/registry/serde_derive-1.0.152/src/fragment.rs"]
mod fragment;

#[path = "/usr/share/cargo/registry/serde_derive-1.0.152/src/de.rs"]
mod de;
#[path = "/usr/share/cargo/registry/serde_derive-1.0.152/src/dummy.rs"]
mod dummy;
#[path = "/usr/share/cargo/registry/serde_derive-1.0.152/src/pretend.rs"]
mod pretend;
#[path = "/usr/share/cargo/registry/serde_derive-1.0.152/src/ser.rs"]
mod ser;
#[path = "/usr/share/cargo/registry/serde_derive-1.0.152/src/this.rs"]
mod this;
#[path = "/usr/share/cargo/registry/serde_derive-1.0.152/src/try.rs"]
mod try;

use proc_macro2::{Group, Ident, TokenTree};
use reapi_macro::TokenStream;
use syn::DeriveInput;

/// `try` idents as raw idents (see the crate docs), in every group.
fn raw_try(tokens: TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Ident(ref i) if i == "try" => TokenTree::Ident(Ident::new_raw("try", i.span())),
            TokenTree::Group(g) => {
                let mut out = Group::new(g.delimiter(), raw_try(g.stream()));
                out.set_span(g.span());
                TokenTree::Group(out)
            }
            other => other,
        })
        .collect()
}

fn to_compile_errors(errors: Vec<syn::Error>) -> proc_macro2::TokenStream {
    let compile_errors = errors.iter().map(syn::Error::to_compile_error);
    quote!(#(#compile_errors)*)
}

/// `#[derive(Serialize)]`, as serde_derive's `derive_serialize`.
pub fn serialize(input: TokenStream) -> TokenStream {
    let mut input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    raw_try(ser::expand_derive_serialize(&mut input).unwrap_or_else(to_compile_errors))
}

/// `#[derive(Deserialize)]`, as serde_derive's `derive_deserialize`.
pub fn deserialize(input: TokenStream) -> TokenStream {
    let mut input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(e) => return e.to_compile_error(),
    };
    raw_try(de::expand_derive_deserialize(&mut input).unwrap_or_else(to_compile_errors))
}

reapi_macro::export_derive!(derive_serialize, serialize);
reapi_macro::export_derive!(derive_deserialize, deserialize);

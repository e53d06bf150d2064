//! `#[derive(Stamped)]`: `fn stamp() -> &'static str`, the time this macro was built. Do not do this.
use quote::quote;
use reapi_macro::TokenStream;

include!(concat!(env!("OUT_DIR"), "/stamp.rs"));

pub fn stamped(input: TokenStream) -> TokenStream {
    let mut name = None;
    let mut after_keyword = false;
    for tt in input {
        if let proc_macro2::TokenTree::Ident(id) = tt {
            if after_keyword {
                name = Some(id);
                break;
            }
            after_keyword = id == "struct" || id == "enum";
        }
    }
    match name {
        Some(name) => quote! { impl #name { pub fn stamp() -> &'static str { #STAMP } } },
        None => quote! { compile_error!("Stamped: expected a struct or enum"); },
    }
}

reapi_macro::export_derive!(derive_stamped, stamped);

//! `#[derive(Describe)]`: adds `describe() -> &'static str` and `FIELD_NAMES` to a struct or enum.
use quote::quote;
use reapi_macro::TokenStream;
use syn::{Data, DeriveInput, Fields};

fn field_names(fields: &Fields) -> Vec<String> {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| f.ident.as_ref().map(|id| id.to_string()).unwrap_or_else(|| i.to_string()))
        .collect()
}

pub fn describe(input: TokenStream) -> TokenStream {
    let ast: DeriveInput = match syn::parse2(input) {
        Ok(ast) => ast,
        Err(e) => return e.to_compile_error(),
    };
    let name = &ast.ident;
    let (impl_generics, ty_generics, where_clause) = ast.generics.split_for_impl();
    let (text, names) = match &ast.data {
        Data::Struct(s) => {
            let names = field_names(&s.fields);
            (format!("struct {} {{ {} }}", name, names.join(", ")), names)
        }
        Data::Enum(e) => {
            let names: Vec<String> = e.variants.iter().map(|v| v.ident.to_string()).collect();
            (format!("enum {} {{ {} }}", name, names.join(" | ")), names)
        }
        Data::Union(u) => {
            return syn::Error::new(u.union_token.span, "Describe does not support unions").to_compile_error();
        }
    };
    quote! {
        impl #impl_generics #name #ty_generics #where_clause {
            pub const FIELD_NAMES: &'static [&'static str] = &[#(#names),*];
            pub fn describe() -> &'static str {
                #text
            }
        }
    }
}

reapi_macro::export_derive!(derive_describe, describe);

//! `#[trace]` / `#[trace("label")]` on a function: each call first pushes the label (default: the
//! function's name) onto a `Vec<&'static str>` passed as the `TRACE` thread-local of the caller's crate.
use quote::quote;
use reapi_macro::TokenStream;
use syn::{ItemFn, LitStr};

pub fn trace(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut func: ItemFn = match syn::parse2(item) {
        Ok(f) => f,
        Err(e) => return e.to_compile_error(),
    };
    let label = if attr.is_empty() {
        func.sig.ident.to_string()
    } else {
        match syn::parse2::<LitStr>(attr) {
            Ok(l) => l.value(),
            Err(e) => return e.to_compile_error(),
        }
    };
    let body = &func.block;
    let new_body: syn::Block = syn::parse_quote! {{
        crate::TRACE.with(|t| t.borrow_mut().push(#label));
        #body
    }};
    func.block = Box::new(new_body);
    quote! { #func }
}

reapi_macro::export_attribute!(attr_trace, trace);

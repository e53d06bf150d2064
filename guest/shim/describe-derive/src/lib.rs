//! Native shims of the example wasm macros: each forwards to `reapi expand`.
//! The modules (describe.wasm, trace.wasm) come from `reapi macro build guest/examples/...`.
extern crate proc_macro;
use proc_macro::TokenStream;

#[proc_macro_derive(Describe)]
pub fn describe(input: TokenStream) -> TokenStream {
    reapi_shim::derive(env!("CARGO_MANIFEST_DIR"), "describe.wasm", "derive_describe", input)
}

#[proc_macro_attribute]
pub fn trace(attr: TokenStream, item: TokenStream) -> TokenStream {
    reapi_shim::attribute(env!("CARGO_MANIFEST_DIR"), "trace.wasm", "attr_trace", attr, item)
}

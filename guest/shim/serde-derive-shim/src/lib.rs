//! serde's derives, expanded by serde_derive compiled to wasm (serde.wasm, from
//! `reapi macro build guest/examples/serde`) through the reapi shim: the same `Serialize` and
//! `Deserialize` names and `#[serde(...)]` attributes as serde_derive, no syn or quote compiled here.
extern crate proc_macro;
use proc_macro::TokenStream;

#[proc_macro_derive(Serialize, attributes(serde))]
pub fn serialize(input: TokenStream) -> TokenStream {
    reapi_shim::derive(env!("CARGO_MANIFEST_DIR"), "serde.wasm", "derive_serialize", input)
}

#[proc_macro_derive(Deserialize, attributes(serde))]
pub fn deserialize(input: TokenStream) -> TokenStream {
    reapi_shim::derive(env!("CARGO_MANIFEST_DIR"), "serde.wasm", "derive_deserialize", input)
}

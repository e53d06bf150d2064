//! Export proc macros compiled to `wasm32-unknown-unknown` with reapi's string ABI.
//!
//! The module exports `memory`, `alloc(len) -> ptr`, `dealloc(ptr, len)` and, per macro,
//! `name(ptr, len) -> i64` (derive) or `name(attr_ptr, attr_len, item_ptr, item_len) -> i64`
//! (attribute): UTF-8 token text in, UTF-8 token text out, the result packed as
//! `(len << 32) | ptr`. Errors come back as `compile_error!{...}` text; a panic traps.
//!
//! ```ignore
//! use reapi_macro::TokenStream;
//! fn my_derive(input: TokenStream) -> TokenStream { /* syn + quote */ }
//! reapi_macro::export_derive!(derive_my, my_derive);
//! ```
//!
//! The same functions run natively with [`run_derive`] / [`run_attribute`], so a macro can be
//! tested (and its expansions compared) without wasm.

pub use proc_macro2::TokenStream;
use std::str::FromStr;

/// A derive macro's implementation: item tokens in, generated tokens out.
pub type DeriveFn = fn(TokenStream) -> TokenStream;
/// An attribute macro's implementation: attribute tokens and item tokens in, tokens out.
pub type AttributeFn = fn(TokenStream, TokenStream) -> TokenStream;

fn compile_error(message: &str) -> String {
    format!("compile_error ! {{ {:?} }}", message)
}

fn parse(what: &str, text: &str) -> Result<TokenStream, String> {
    TokenStream::from_str(text).map_err(|e| compile_error(&format!("reapi-macro: the {} is not valid Rust tokens: {:?}", what, e)))
}

/// Run a derive on token text: what the wasm export returns, natively.
pub fn run_derive(input: &str, f: DeriveFn) -> String {
    match parse("input", input) {
        Ok(tokens) => f(tokens).to_string(),
        Err(e) => e,
    }
}

/// Run an attribute macro on token text: what the wasm export returns, natively.
pub fn run_attribute(attr: &str, item: &str, f: AttributeFn) -> String {
    match (parse("attribute", attr), parse("item", item)) {
        (Ok(a), Ok(i)) => f(a, i).to_string(),
        (Err(e), _) | (_, Err(e)) => e,
    }
}

#[doc(hidden)]
pub mod abi {
    /// Borrow `len` bytes at `ptr` (written by the host into memory from `alloc`) as text.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be memory the host filled after calling `alloc(len)`.
    pub unsafe fn input<'a>(ptr: u32, len: u32) -> &'a str {
        let bytes = core::slice::from_raw_parts(ptr as usize as *const u8, len as usize);
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(_) => panic!("reapi-macro: the host passed input that is not UTF-8"),
        }
    }

    /// Hand `out` to the host: `(len << 32) | ptr`. The memory is never freed: every
    /// expansion runs in a fresh instance.
    pub fn output(out: String) -> u64 {
        let bytes = out.into_bytes().into_boxed_slice();
        let len = bytes.len() as u64;
        let ptr = Box::into_raw(bytes) as *mut u8 as usize as u64;
        (len << 32) | ptr
    }

    #[cfg(target_arch = "wasm32")]
    #[no_mangle]
    pub extern "C" fn alloc(len: u32) -> u32 {
        let buf = vec![0u8; len as usize].into_boxed_slice();
        Box::into_raw(buf) as *mut u8 as usize as u32
    }

    /// # Safety
    /// `ptr`/`len` must come from `alloc`.
    #[cfg(target_arch = "wasm32")]
    #[no_mangle]
    pub unsafe extern "C" fn dealloc(ptr: u32, len: u32) {
        let slice = core::ptr::slice_from_raw_parts_mut(ptr as usize as *mut u8, len as usize);
        drop(Box::from_raw(slice));
    }
}

/// Export `$f: fn(TokenStream) -> TokenStream` as the derive entry `$name(ptr, len) -> i64`.
#[macro_export]
macro_rules! export_derive {
    ($name:ident, $f:path) => {
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub unsafe extern "C" fn $name(ptr: u32, len: u32) -> u64 {
            $crate::abi::output($crate::run_derive($crate::abi::input(ptr, len), $f))
        }
    };
}

/// Export `$f: fn(TokenStream, TokenStream) -> TokenStream` as the attribute entry
/// `$name(attr_ptr, attr_len, item_ptr, item_len) -> i64`.
#[macro_export]
macro_rules! export_attribute {
    ($name:ident, $f:path) => {
        #[cfg(target_arch = "wasm32")]
        #[no_mangle]
        pub unsafe extern "C" fn $name(attr_ptr: u32, attr_len: u32, item_ptr: u32, item_len: u32) -> u64 {
            $crate::abi::output($crate::run_attribute($crate::abi::input(attr_ptr, attr_len), $crate::abi::input(item_ptr, item_len), $f))
        }
    };
}

//! A thin native proc-macro shim: hand the tokens to `reapi expand`, which runs the macro's wasm
//! module on the fleet (or serves the expansion from the cache), and parse what comes back.
//!
//! ```ignore
//! extern crate proc_macro;
//! use proc_macro::TokenStream;
//! #[proc_macro_derive(Describe)]
//! pub fn describe(input: TokenStream) -> TokenStream {
//!     reapi_shim::derive(env!("CARGO_MANIFEST_DIR"), "describe.wasm", "derive_describe", input)
//! }
//! ```
//!
//! Environment (read when the macro runs, inside rustc):
//! - `REAPI_ENDPOINT`: grpc://HOST:PORT of reapi (default grpc://127.0.0.1:8980)
//! - `REAPI_BIN`: the reapi command (default `reapi` on PATH)
//! - `REAPI_WASM_DIR`: where modules are looked up first (default: the shim crate's directory)
extern crate proc_macro;

use proc_macro::TokenStream;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

fn error(message: &str) -> TokenStream {
    TokenStream::from_str(&format!("compile_error!({:?});", message)).unwrap()
}

fn module_path(crate_dir: &str, module: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("REAPI_WASM_DIR") {
        let p = Path::new(&dir).join(module);
        if p.exists() {
            return p;
        }
    }
    Path::new(crate_dir).join(module)
}

fn run(crate_dir: &str, module: &str, entry: &str, attr: Option<TokenStream>, input: TokenStream) -> TokenStream {
    let module = module_path(crate_dir, module);
    if !module.exists() {
        return error(&format!("reapi-shim: wasm module {} not found (set REAPI_WASM_DIR or build it with `reapi macro build`)", module.display()));
    }
    let bin = std::env::var("REAPI_BIN").unwrap_or_else(|_| "reapi".to_string());
    let endpoint = std::env::var("REAPI_ENDPOINT").unwrap_or_else(|_| "grpc://127.0.0.1:8980".to_string());
    let mut cmd = Command::new(&bin);
    cmd.arg("expand").arg("--endpoint").arg(&endpoint).arg("--module").arg(&module).arg("--entry").arg(entry);
    let mut attr_file = None;
    if let Some(attr) = attr {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!("reapi-shim-attr-{}-{}.rs", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        if let Err(e) = std::fs::write(&path, attr.to_string()) {
            return error(&format!("reapi-shim: cannot write {}: {}", path.display(), e));
        }
        cmd.arg("--attr").arg(&path);
        attr_file = Some(path);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let result = (|| {
        let mut child = cmd.spawn().map_err(|e| format!("reapi-shim: cannot run `{}` (set REAPI_BIN): {}", bin, e))?;
        let text = input.to_string();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
        let out = child.wait_with_output().map_err(|e| format!("reapi-shim: {}", e))?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(format!("{} (reapi expand {}, {} via {})", String::from_utf8_lossy(&out.stderr).trim(), out.status, entry, endpoint));
        }
        String::from_utf8(out.stdout).map_err(|_| "reapi-shim: the expansion is not UTF-8".to_string())
    })();
    if let Some(path) = attr_file {
        let _ = std::fs::remove_file(path);
    }
    match result {
        Ok(text) => TokenStream::from_str(&text).unwrap_or_else(|e| error(&format!("reapi-shim: the expansion does not parse as tokens: {:?}", e))),
        Err(message) => error(&message),
    }
}

/// Expand a derive (or function-like) macro: `crate_dir` is the shim's `env!("CARGO_MANIFEST_DIR")`.
pub fn derive(crate_dir: &str, module: &str, entry: &str, input: TokenStream) -> TokenStream {
    run(crate_dir, module, entry, None, input)
}

/// Expand an attribute macro.
pub fn attribute(crate_dir: &str, module: &str, entry: &str, attr: TokenStream, item: TokenStream) -> TokenStream {
    run(crate_dir, module, entry, Some(attr), item)
}

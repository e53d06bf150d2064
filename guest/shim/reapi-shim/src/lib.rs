//! A thin native proc-macro shim: hand the tokens to the persistent expander (`reapi cargo` starts
//! one and names its socket in `REAPI_EXPANDER_SOCKET`; `reapi expander` runs one by hand), which
//! serves the expansion from memory or the ActionCache or runs the macro's wasm module, and parse
//! what comes back. Without an expander it runs `reapi expand` once per invocation (slow: a
//! process each time).
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
//! - `REAPI_EXPANDER_SOCKET`: the expander's Unix socket (one connection per rustc process, kept)
//! - `REAPI_ENDPOINT`: grpc://HOST:PORT of reapi (default grpc://127.0.0.1:8980)
//! - `REAPI_BIN`: the reapi command (default `reapi` on PATH)
//! - `REAPI_WASM_DIR`: where modules are looked up first (default: the shim crate's directory)
extern crate proc_macro;

use proc_macro::TokenStream;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The connection to the expander, kept for the whole rustc process.
static EXPANDER: Mutex<Option<UnixStream>> = Mutex::new(None);

/// One request and answer on `stream` (the wire format of clients/expander/expander-server.ts).
fn ask(stream: &mut UnixStream, module: &Path, entry: &str, attr: Option<&str>, input: &str) -> std::io::Result<Result<String, String>> {
    let path = module.to_string_lossy();
    let attr_len = attr.map(|a| a.len() as i64).unwrap_or(-1);
    let mut request = format!("expand {} {} {} {}\n", entry, path.len(), input.len(), attr_len).into_bytes();
    request.extend_from_slice(path.as_bytes());
    request.extend_from_slice(input.as_bytes());
    if let Some(a) = attr {
        request.extend_from_slice(a.as_bytes());
    }
    stream.write_all(&request)?;
    let mut header = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        stream.read_exact(&mut byte)?;
        if byte[0] == b'\n' {
            break;
        }
        header.push(byte[0]);
    }
    let header = String::from_utf8_lossy(&header).into_owned();
    let (kind, len) = header.split_once(' ').ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, header.clone()))?;
    let len: usize = len.parse().map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, header.clone()))?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body)?;
    let text = String::from_utf8(body).map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))?;
    Ok(if kind == "ok" { Ok(text) } else { Err(text) })
}

/// Connect to the expander. `reapi cargo` starts cargo before its expander listens: wait for the
/// socket a while, as the build-script trampolines do.
fn connect(socket: &str) -> Result<UnixStream, String> {
    let started = std::time::Instant::now();
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) && started.elapsed().as_secs() < 60 => {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            Err(e) => return Err(format!("reapi-shim: cannot reach the expander at {} (REAPI_EXPANDER_SOCKET): {}", socket, e)),
        }
    }
}

/// Expand through the expander at `socket`, connecting (again) when needed.
fn via_expander(socket: &str, module: &Path, entry: &str, attr: Option<&str>, input: &str) -> Result<String, String> {
    let mut conn = EXPANDER.lock().unwrap_or_else(|e| e.into_inner());
    let mut last = String::new();
    for _ in 0..2 {
        if conn.is_none() {
            *conn = Some(connect(socket)?);
        }
        match ask(conn.as_mut().unwrap(), module, entry, attr, input) {
            Ok(answer) => return answer.map_err(|m| format!("{} ({} via the expander)", m, entry)),
            Err(e) => {
                // A dropped connection (the expander restarted): one more try on a new one.
                *conn = None;
                last = e.to_string();
            }
        }
    }
    Err(format!("reapi-shim: the expander at {} did not answer: {}", socket, last))
}

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
    if let Ok(socket) = std::env::var("REAPI_EXPANDER_SOCKET") {
        let module = std::fs::canonicalize(&module).unwrap_or(module);
        let attr = attr.map(|a| a.to_string());
        return match via_expander(&socket, &module, entry, attr.as_deref(), &input.to_string()) {
            Ok(text) => TokenStream::from_str(&text).unwrap_or_else(|e| error(&format!("reapi-shim: the expansion does not parse as tokens: {:?}", e))),
            Err(message) => error(&message),
        };
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

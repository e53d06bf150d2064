// Writes the time and its own address-space layout into OUT_DIR: different on every run, which
// the verifier (double execution) must catch and report, naming the crate.
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let local = 0u8;
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(format!("{out}/stamp.rs"), format!("pub const STAMP: &str = \"{nanos} {:p}\";\n", &local)).unwrap();
}

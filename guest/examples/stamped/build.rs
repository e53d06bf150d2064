// Embeds something variable: the build's wall-clock time and output directory.
use std::time::{SystemTime, UNIX_EPOCH};
fn main() {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let out = std::env::var("OUT_DIR").unwrap();
    let stamp = format!("pub const STAMP: &str = {:?};\n", format!("built at {} in {}", nanos, out));
    std::fs::write(std::path::Path::new(&out).join("stamp.rs"), stamp).unwrap();
}

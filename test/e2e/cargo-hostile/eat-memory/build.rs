// Allocates (and touches) memory until something stops it. Never run locally by the test.
fn main() {
    if std::env::var("OUT_DIR").map(|d| !d.starts_with("/build-")).unwrap_or(true) {
        panic!("eat-memory only runs in reapi's build-script sandbox");
    }
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![1u8; 64 << 20]);
        println!("cargo:warning=holding {} MiB", hoard.len() * 64);
    }
}

// The package's own build script: reads a data file from its source directory, generates code into
// OUT_DIR, compiles a C file into a static library in OUT_DIR (the cc crate: `cargo:rustc-link-*`
// directives naming OUT_DIR, which the client maps back to the host's), and tells rustc a cfg and
// an environment variable.
use std::env;
use std::fs;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=data/greeting.txt");
    println!("cargo:rerun-if-changed=data/checksum.c");
    cc::Build::new().file("data/checksum.c").compile("demo_checksum");
    println!("cargo:rerun-if-changed=build.rs");
    let greeting = fs::read_to_string("data/greeting.txt").expect("data/greeting.txt");
    let out_dir = env::var("OUT_DIR").expect("OUT_DIR");
    let code = format!(
        "pub const GREETING: &str = {:?};\npub const GREETING_WORDS: usize = {};\n",
        greeting.trim(),
        greeting.split_whitespace().count()
    );
    fs::write(Path::new(&out_dir).join("generated.rs"), code).expect("write generated.rs");
    println!("cargo:rustc-cfg=demo_generated");
    println!(
        "cargo:rustc-env=DEMO_BUILD_INFO=profile={} target={} features={}",
        env::var("PROFILE").unwrap(),
        env::var("TARGET").unwrap(),
        env::vars().filter(|(k, _)| k.starts_with("CARGO_FEATURE_")).count()
    );
    // The rustc the build script was given: the toolchain of the build, wherever it runs.
    let rustc = env::var("RUSTC").expect("RUSTC");
    let version = std::process::Command::new(&rustc).arg("-vV").output().expect("run $RUSTC -vV");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let release = version.lines().find_map(|l| l.strip_prefix("release: ")).unwrap_or("?").to_owned();
    println!("cargo:rustc-env=DEMO_RUSTC_RELEASE={}", release);
    // The manifest directory as the build script saw it: the client maps sandbox paths back.
    println!("cargo:rustc-env=DEMO_MANIFEST_DIR={}", env::var("CARGO_MANIFEST_DIR").unwrap());
}

//! `native-expand ENTRY [--attr FILE] [--repeat N] < input`: the example macros, natively, with
//! the very functions their wasm exports call. `--repeat N` expands N times and prints the time
//! per expansion in nanoseconds on stderr (for the benchmark); stdout gets the expansion once.
use std::io::Read;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entry = args.get(1).cloned().unwrap_or_default();
    let mut attr = String::new();
    let mut repeat = 1u32;
    let mut i = 2;
    while i < args.len() {
        match args[i].as_str() {
            "--attr" => attr = std::fs::read_to_string(&args[i + 1]).expect("read --attr file"),
            "--repeat" => repeat = args[i + 1].parse().expect("--repeat N"),
            other => panic!("unknown argument {}", other),
        }
        i += 2;
    }
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("read stdin");
    let run = || match entry.as_str() {
        "derive_describe" => reapi_macro::run_derive(&input, describe::describe),
        "attr_trace" => reapi_macro::run_attribute(&attr, &input, trace::trace),
        "derive_serialize" => reapi_macro::run_derive(&input, serde_derive_wasm::serialize),
        "derive_deserialize" => reapi_macro::run_derive(&input, serde_derive_wasm::deserialize),
        other => {
            eprintln!("native-expand: unknown entry {}", other);
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    let mut out = String::new();
    for _ in 0..repeat {
        out = run();
    }
    if repeat > 1 {
        eprintln!("{}", start.elapsed().as_nanos() / repeat as u128);
    }
    print!("{}", out);
}

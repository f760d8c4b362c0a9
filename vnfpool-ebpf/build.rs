use which::which;

/// Rebuilds the program when bpf-linker changes (it is not a cargo dependency).
fn main() {
    let bpf_linker = which("bpf-linker").expect("bpf-linker on PATH (run scripts/setup.sh)");
    println!(
        "cargo:rerun-if-changed={}",
        bpf_linker.to_str().expect("UTF-8 path")
    );
}

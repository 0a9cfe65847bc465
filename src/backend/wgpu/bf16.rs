//! bf16 storage: WGSL has no bf16 type, so a shader's bf16 bindings are
//! rewritten at compile time to hold two values per 32-bit word.

/// Rewrites a shader so that the bindings typed `array<X>` for each X in
/// `packed` hold bf16 values two to a u32 word: loads `f32(name[i])` become
/// `ld_name(i)` (widening), stores `name[i] = X(v);` become `st_name(i, v)`
/// (round to nearest-even, written with a compare-exchange loop because the
/// other half of the word belongs to another thread).
pub(super) fn pack_bf16(src: &str, packed: &[&str]) -> String {
    let decl =
        regex::Regex::new(r"var<storage, read_write> (\w+): array<(\w+)>;").expect("static regex");
    let names: Vec<String> = decl
        .captures_iter(src)
        .filter(|c| packed.contains(&&c[2]))
        .map(|c| c[1].to_string())
        .collect();
    let mut out = src.to_string();
    let mut helpers = String::new();
    for n in &names {
        let d = regex::Regex::new(&format!(r"var<storage, read_write> {n}: array<\w+>;"))
            .expect("regex");
        out = d
            .replace_all(
                &out,
                format!("var<storage, read_write> {n}: array<atomic<u32>>;").as_str(),
            )
            .into_owned();
        let st = regex::Regex::new(&format!(r"\b{n}\[([^\]]*)\] = \w+\((.*)\);")).expect("regex");
        out = st
            .replace_all(&out, format!("st_{n}($1, $2);").as_str())
            .into_owned();
        helpers.push_str(&format!(
            "fn ld_{n}(i_: u32) -> f32 {{\n    let w_ = atomicLoad(&{n}[i_ >> 1u]);\n    let h_ = select(w_ & 0xffffu, w_ >> 16u, (i_ & 1u) == 1u);\n    return bitcast<f32>(h_ << 16u);\n}}\n\
             fn st_{n}(i_: u32, v_: f32) {{\n    let bits_ = bitcast<u32>(v_);\n    var r_ = (bits_ + 0x7fffu + ((bits_ >> 16u) & 1u)) >> 16u;\n    if (v_ != v_) {{ r_ = 0x7fc0u; }}\n    let odd_ = (i_ & 1u) == 1u;\n    loop {{\n        let old_ = atomicLoad(&{n}[i_ >> 1u]);\n        let new_ = select((old_ & 0xffff0000u) | r_, (old_ & 0xffffu) | (r_ << 16u), odd_);\n        if (atomicCompareExchangeWeak(&{n}[i_ >> 1u], old_, new_).exchanged) {{ break; }}\n    }}\n}}\n"
        ));
    }
    for n in &names {
        let ld = regex::Regex::new(&format!(r"f32\({n}\[([^\]]*)\]\)")).expect("regex");
        out = ld
            .replace_all(&out, format!("ld_{n}($1)").as_str())
            .into_owned();
    }
    format!("{out}\n{helpers}")
}

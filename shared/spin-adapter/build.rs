//! Assembles the Lua scripts at build time: each `src/scripts/<name>.lua` (but `lib.lua`)
//! becomes `$OUT_DIR/scripts/<name>.lua` = key-layout prelude + `lib.lua` + body, and
//! `$OUT_DIR/scripts.rs` declares one `Script` per file with its SHA1 (Redis' script id).
//!
//! Why at build time: an instance serves one request, so a SHA1 computed at run time is
//! computed again on every request. A profile of send-email-code under load put a tenth of
//! all CPU time in hashing script sources.

use std::fmt::Write as _;
use std::path::Path;

// `lua_prelude()`, from the file `keys.rs` includes as well: one owner of key names.
include!("src/key_names.rs");

fn main() {
    let scripts_dir = Path::new("src/scripts");
    println!("cargo::rerun-if-changed=src/scripts");
    println!("cargo::rerun-if-changed=src/key_names.rs");

    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    let out = Path::new(&out_dir).join("scripts");
    std::fs::create_dir_all(&out).expect("creating $OUT_DIR/scripts");

    let lib = std::fs::read_to_string(scripts_dir.join("lib.lua")).expect("reading lib.lua");
    let prelude = lua_prelude();

    let mut names: Vec<String> = std::fs::read_dir(scripts_dir)
        .expect("listing src/scripts")
        .map(|entry| entry.expect("reading src/scripts").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "lua"))
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_string()))
        .filter(|name| name != "lib")
        .collect();
    names.sort();

    let mut rust = String::from(
        "/// Every script, assembled by `build.rs` from `src/scripts/` (prelude + `lib.lua` + body).\n\
         pub mod scripts {\n    use super::Script;\n",
    );
    for name in &names {
        let body = std::fs::read_to_string(scripts_dir.join(format!("{name}.lua")))
            .unwrap_or_else(|e| panic!("reading {name}.lua: {e}"));
        let source = format!("{prelude}{lib}{body}");
        std::fs::write(out.join(format!("{name}.lua")), &source)
            .unwrap_or_else(|e| panic!("writing {name}.lua: {e}"));
        let sha1 = sha1_smol::Sha1::from(&source).digest().to_string();
        let constant = name.to_uppercase();
        writeln!(
            rust,
            "    /// `src/scripts/{name}.lua`.\n    pub static {constant}: Script = Script {{\n        \
             name: \"{name}\",\n        \
             source: include_str!(concat!(env!(\"OUT_DIR\"), \"/scripts/{name}.lua\")),\n        \
             sha1: \"{sha1}\",\n    }};"
        )
        .expect("writing to a String");
    }
    let all: Vec<String> = names
        .iter()
        .map(|n| format!("&{}", n.to_uppercase()))
        .collect();
    writeln!(
        rust,
        "    /// All of them, for tests.\n    #[cfg(test)]\n    pub static ALL: &[&Script] = &[{}];\n}}",
        all.join(", ")
    )
    .expect("writing to a String");
    std::fs::write(Path::new(&out_dir).join("scripts.rs"), rust).expect("writing scripts.rs");
}

//! Finding the allocators to compare and checking that each really takes over `malloc` when
//! preloaded.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One allocator under test.
#[derive(Clone, Debug)]
pub struct Allocator {
    /// Short name used in tables and filters (`glibc`, `jemalloc`, ...).
    pub name: String,
    /// The shared object to preload; `None` for the system allocator (glibc).
    pub path: Option<PathBuf>,
    /// What it is (package, how it was built).
    pub what: String,
    /// Version reported by the probe (or the package), when known.
    pub version: String,
    /// Environment variables every run under it gets (a `--variant` of another allocator).
    pub env: Vec<(String, String)>,
}

impl Allocator {
    /// Sets the allocator's variables on `cmd`, beside its `LD_PRELOAD` (removed for glibc).
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env_remove("LD_PRELOAD");
        if let Some(p) = &self.path {
            cmd.env("LD_PRELOAD", p);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
    }
}

/// `--variant NAME=BASE:VAR=VALUE[;VAR=VALUE...]`: allocator BASE again, as column NAME, with
/// those environment variables (`domalloc+prof=domalloc:DOMALLOC_PROF=1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variant {
    /// The column's name.
    pub name: String,
    /// The allocator it runs.
    pub base: String,
    /// The variables it sets.
    pub env: Vec<(String, String)>,
}

impl std::str::FromStr for Variant {
    type Err = String;
    fn from_str(s: &str) -> Result<Variant, String> {
        let form = "takes NAME=BASE:VAR=VALUE[;VAR=VALUE...], e.g. domalloc+prof=domalloc:DOMALLOC_PROF=1";
        let (name, rest) = s.split_once('=').ok_or(form)?;
        let (base, vars) = rest.split_once(':').ok_or(form)?;
        let env = vars
            .split(';')
            .filter(|v| !v.is_empty())
            .map(|v| v.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or(form))
            .collect::<Result<Vec<_>, _>>()?;
        if name.is_empty() || base.is_empty() || env.is_empty() || name == base {
            return Err(form.into());
        }
        Ok(Variant { name: name.into(), base: base.into(), env })
    }
}

/// An allocator that was looked for and not used, with the reason.
#[derive(Clone, Debug)]
pub struct Skipped {
    /// Its name.
    pub name: String,
    /// Why it is not part of the run.
    pub why: String,
}

/// Where the runner looks for allocators; filled from the command line.
#[derive(Clone, Debug, Default)]
pub struct Search {
    /// `--mimalloc3 PATH` (else `$MIMALLOC3_SO`, else `<target>/mimalloc3/libmimalloc3.so`).
    pub mimalloc3: Option<PathBuf>,
    /// `--domalloc PATH` (else `$DOMALLOC_SO`, else `<target>/release/libdomalloc.so`).
    pub domalloc: Option<PathBuf>,
    /// `--lib NAME=PATH` extras (override a built-in of the same name).
    pub extra: Vec<(String, PathBuf)>,
    /// `--variant` columns: other allocators run with environment variables.
    pub variants: Vec<Variant>,
}

/// Records a found (path) or skipped (reason) allocator.
type AddFn<'a> = dyn FnMut(&str, Option<PathBuf>, String, String) + 'a;

/// Standard library directories, multiarch first.
fn lib_dirs() -> Vec<PathBuf> {
    let arch = std::env::consts::ARCH;
    let mut v =
        vec![PathBuf::from(format!("/usr/lib/{arch}-linux-gnu")), PathBuf::from(format!("/lib/{arch}-linux-gnu"))];
    for d in ["/usr/lib64", "/usr/lib", "/usr/local/lib", "/lib64", "/lib"] {
        v.push(PathBuf::from(d));
    }
    v
}

fn find_lib(file: &str) -> Option<PathBuf> {
    lib_dirs().into_iter().map(|d| d.join(file)).find(|p| p.is_file())
}

/// Debian package version (`dpkg-query`), empty when unknown.
fn deb_version(pkg: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", pkg])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn glibc_version() -> String {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    unsafe {
        extern "C" {
            fn gnu_get_libc_version() -> *const std::ffi::c_char;
        }
        std::ffi::CStr::from_ptr(gnu_get_libc_version()).to_string_lossy().into_owned()
    }
}

/// The directory of the running executable (`<target>/release`).
pub fn exe_dir() -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_else(|| PathBuf::from("."))
}

/// Looks for every known allocator. Returns the candidates found (not yet probed) and the
/// ones skipped, each with a clear reason.
pub fn discover(search: &Search) -> (Vec<Allocator>, Vec<Skipped>) {
    let mut found = Vec::new();
    let mut skipped = Vec::new();

    // glibc has no library to preload: it is what runs when nothing is preloaded.
    found.push(Allocator {
        name: "glibc".into(),
        path: None,
        what: format!("system malloc (glibc {})", glibc_version()),
        version: String::new(),
        env: Vec::new(),
    });
    // Absolute paths: the apps part runs programs in other directories.
    let mut add = |name: &str, path: Option<PathBuf>, what: String, missing: String| match path {
        Some(p) => found.push(Allocator {
            name: name.into(),
            path: Some(std::fs::canonicalize(&p).unwrap_or(p)),
            what,
            version: String::new(),
            env: Vec::new(),
        }),
        None => skipped.push(Skipped { name: name.into(), why: missing }),
    };

    let pkg = |name: &str, file: &str, pkg: &str, add: &mut AddFn<'_>| {
        let v = deb_version(pkg);
        let what = if v.is_empty() { file.to_string() } else { format!("Debian {pkg} {v}") };
        add(name, find_lib(file), what, format!("{file} not found (install the Debian package {pkg})"));
    };
    pkg("jemalloc", "libjemalloc.so.2", "libjemalloc2", &mut add);
    pkg("mimalloc2", "libmimalloc.so.2", "libmimalloc2.0", &mut add);

    let target = exe_dir().parent().map(Path::to_path_buf).unwrap_or_default();
    let mi3 = search
        .mimalloc3
        .clone()
        .or_else(|| std::env::var_os("MIMALLOC3_SO").map(PathBuf::from))
        .unwrap_or_else(|| target.join("mimalloc3/libmimalloc3.so"));
    add(
        "mimalloc3",
        mi3.is_file().then(|| mi3.clone()),
        "built from the libmimalloc-sys crate's bundled v3 sources".into(),
        format!("{} not found (scripts/bench.sh builds it; or pass --mimalloc3 PATH)", mi3.display()),
    );

    pkg("tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4", &mut add);

    let dom = search
        .domalloc
        .clone()
        .or_else(|| std::env::var_os("DOMALLOC_SO").map(PathBuf::from))
        .unwrap_or_else(|| exe_dir().join("libdomalloc.so"));
    add(
        "domalloc",
        dom.is_file().then(|| dom.clone()),
        "this project (cargo build --release -p domalloc-ffi)".into(),
        format!(
            "{} not found (build it with `cargo build --release -p domalloc-ffi`; or pass --domalloc PATH)",
            dom.display()
        ),
    );

    for (name, path) in &search.extra {
        found.retain(|a| &a.name != name);
        skipped.retain(|s| &s.name != name);
        if path.is_file() {
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            found.push(Allocator {
                name: name.clone(),
                path: Some(path),
                what: "--lib".into(),
                version: String::new(),
                env: Vec::new(),
            });
        } else {
            skipped.push(Skipped { name: name.clone(), why: format!("{} not found (--lib)", path.display()) });
        }
    }
    for v in &search.variants {
        found.retain(|a| a.name != v.name);
        skipped.retain(|s| s.name != v.name);
        let vars: Vec<String> = v.env.iter().map(|(k, x)| format!("{k}={x}")).collect();
        match found.iter().find(|a| a.name == v.base).cloned() {
            Some(mut a) => {
                a.what = format!("{} with {}", v.base, vars.join(" "));
                a.name = v.name.clone();
                a.env.extend(v.env.iter().cloned());
                found.push(a);
            }
            None => skipped.push(Skipped {
                name: v.name.clone(),
                why: format!("--variant of {}, which is not available", v.base),
            }),
        }
    }
    (found, skipped)
}

/// Runs `workloads probe` under the allocator and checks that `malloc` resolves into the
/// preloaded library (for glibc: into libc). Fills in the version. `Err` says why not.
pub fn probe(workloads_bin: &Path, a: &mut Allocator) -> Result<(), String> {
    probe_under(&[], workloads_bin, a)
}

/// [`probe`] with the probe started through `wrapper` (a program and its arguments, such as
/// valgrind): checks that the preload takes over `malloc` there too.
pub fn probe_under(wrapper: &[String], workloads_bin: &Path, a: &mut Allocator) -> Result<(), String> {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(workloads_bin);
            c
        }
        None => Command::new(workloads_bin),
    };
    cmd.arg("probe");
    a.apply(&mut cmd);
    let out = cmd.output().map_err(|e| format!("cannot run {}: {e}", Path::new(cmd.get_program()).display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let first = stderr.lines().chain(stdout.lines()).next().unwrap_or("").to_string();
        return Err(format!("the probe failed under it ({}): {first}", out.status));
    }
    let line = stdout.lines().find(|l| l.starts_with("PROBE ")).ok_or("the probe printed nothing")?;
    let field = |k: &str| line.split_whitespace().find_map(|kv| kv.strip_prefix(k)).map(str::to_string);
    let from = field("malloc_from=").unwrap_or_default();
    let from_c = std::fs::canonicalize(&from).unwrap_or_else(|_| PathBuf::from(&from));
    match &a.path {
        Some(p) => {
            let want = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            if from_c != want {
                return Err(format!(
                    "preloading it did not replace malloc (malloc comes from {from}); does it export malloc?"
                ));
            }
        }
        None => {
            if !from.contains("libc.so") {
                return Err(format!("malloc comes from {from}, not libc (is LD_PRELOAD set in the environment?)"));
            }
        }
    }
    if let Some(v) = field("version=") {
        a.version = v;
    } else if a.name == "glibc" {
        a.version = format!("glibc-{}", glibc_version());
    }
    match a.name.as_str() {
        "mimalloc3" if !a.version.starts_with("mimalloc-3.") => {
            return Err(format!("expected mimalloc v3 but it reports {:?}", a.version))
        }
        "mimalloc2" if !a.version.starts_with("mimalloc-2.") => {
            return Err(format!("expected mimalloc v2 but it reports {:?}", a.version))
        }
        _ => {}
    }
    Ok(())
}
